/**
 * Benchmark guest for the block split driver: connects blkfront to its first
 * virtual disk with the options on its command line, runs the tests named
 * there, and prints one `BENCH {...}` line per test.
 *
 * Command line:
 *   tests=null|rand4k|seqread|seqwrite[,...]
 *   persistent=0|1 indirect=<max indirect segments> order=<ring page order>
 *   maxpages=<blkfront page budget> qd=<I/Os in flight; 0: the ring's size>
 *   zc=0|1 (zero-copy: BlkBuffer I/O, below) cb=0|1 (with zc=1: completion
 *   callbacks, BlockFront.queuePages, instead of a promise per I/O)
 *   warm=<ms> run=<ms>
 *   spin=0|1 (0: the kernel loop does not spin: KernelLoop.setSpins 0, 0)
 *
 * Tests (each: a warm-up of `warm` ms, then `run` ms measured; `qd` async
 * workers each keep one I/O in flight and issue the next when it completes):
 *   null     1-sector READs at sector 0 (meant for a null backend);
 *   rand4k   4 KiB READs at random 4 KiB-aligned offsets, readInto a buffer
 *            reused by each worker;
 *   seqread  1 MiB READs, sequential over the disk (workers take the next
 *            chunk in turn, wrapping at the end);
 *   seqwrite 1 MiB WRITEs, the same way.
 * With zc=1 each worker has one BlkBuffer (BlockFront.allocBuffer: guest
 * pages granted to the backend as they are) and uses readPages/writePages
 * instead of readInto/write, so no data is copied in the guest: 4 KiB for
 * rand4k, 1 MiB for seqread/seqwrite (filled with the pattern once, through
 * buf.write), and a 4 KiB page read with a count of 1 sector for null.
 * Each line carries the options (zc among them), the completions, the time,
 * and blkfront's counters over the measured window (requests, segments,
 * notifications, responses) and how often the kernel loop went to sleep.
 */
import type { KernelApi } from '../../../shared/guest/api.ts';
import { Xen } from '../../../shared/guest/xen.ts';
import { EventChannels } from '../../../shared/guest/evtchn.ts';
import { GrantTable } from '../../../shared/guest/gnttab.ts';
import { GuestXenbus } from '../../../shared/guest/xenbus.ts';
import { KernelLoop } from '../../../shared/guest/kloop.ts';
import { SHUTDOWN_crash, SHUTDOWN_poweroff } from '../../../shared/hypercall.ts';
import { BlockFront, type BlkBuffer } from '../../../domU/blkfront/blkfront.ts';

const SECTOR = 512;
const MIB = 1 << 20;

function args(cmdline: string): Map<string, string> {
  return new Map(cmdline.split(/\s+/).filter(Boolean).map((kv) => {
    const i = kv.indexOf('=');
    return (i < 0 ? [kv, ''] : [kv.slice(0, i), kv.slice(i + 1)]) as [string, string];
  }));
}

/** Counters over a window (short keys: a guest console line holds at most 199 characters). */
interface Counters {
  /** Requests put on the ring, of them indirect, segments. */
  rq: number; ind: number; sg: number;
  /** Notifications sent to the backend; responses consumed. */
  nt: number; rsp: number;
  /** Kernel-loop sleeps; µs asleep in them; µs in the loop's bounded spins that found nothing. */
  sl: number; slUs: number; spUs: number;
}

function counters(dev: BlockFront, loop: KernelLoop): Counters {
  const s = dev.stats;
  const r = s.requests;
  return {
    rq: r.read + r.write + r.indirect + r.flush + r.barrier + r.discard, ind: r.indirect, sg: s.segments,
    nt: s.notifies, rsp: s.responses, sl: loop.sleeps, slUs: Math.round(loop.sleptNs / 1000), spUs: Math.round(loop.fruitlessSpinNs / 1000),
  };
}

function delta(a: Counters, b: Counters): Counters {
  const out = {} as Counters;
  for (const k of Object.keys(a) as Array<keyof Counters>) out[k] = b[k] - a[k];
  return out;
}

/** Completions between two looks at the clock (see `completed`). */
const CLOCK_EVERY = 16;

export default async function blkBench(k: KernelApi): Promise<void> {
  const xen = new Xen(k);
  const ev = new EventChannels(xen);
  const gnttab = new GrantTable(xen);
  const xs = new GuestXenbus(ev);
  const loop = KernelLoop.of(ev);
  const a = args(xen.cmdline);
  const num = (key: string, dflt: number): number => (a.has(key) ? Number(a.get(key)) : dflt);
  if (num('spin', 1) === 0) loop.setSpins({ spinNs: 0, busySpinNs: 0 });
  const tests = (a.get('tests') ?? 'null').split(',');
  const warmNs = BigInt(num('warm', 300)) * 1_000_000n;
  const runNs = BigInt(num('run', 1500)) * 1_000_000n;
  const say = (s: string): void => xen.print(`blk-bench: ${s}\n`);
  try {
    const devids = await xs.wait(xs.client.directory('device/vbd'));
    if (devids.length === 0) throw new Error('no virtual disk');
    const dev = await xs.wait(BlockFront.connect({
      ev, gnttab, xs: xs.client, devid: Number(devids[0]),
      options: {
        persistent: num('persistent', 1) === 1,
        maxIndirectSegments: num('indirect', 32),
        ringPageOrder: num('order', 0),
        maxPages: num('maxpages', 256),
        warn: (msg, data) => say(`warn: ${msg} ${data ? JSON.stringify(data) : ''}`),
      },
    }));
    const f = dev.features;
    const qd = num('qd', 0) || f.ringSize;
    const zc = num('zc', 0) === 1;
    const cb = zc && num('cb', 0) === 1;
    const diskBytes = dev.sectors * SECTOR;
    let seed = 0x9e3779b9;
    const rand = (): number => {
      seed ^= seed << 13; seed >>>= 0;
      seed ^= seed >>> 17;
      seed ^= seed << 5; seed >>>= 0;
      return seed;
    };

    const keptBuffers = new Map<number, BlkBuffer[]>();
    for (const test of tests) {
      const ioBytes = test === 'null' ? SECTOR : test === 'rand4k' ? 4096 : MIB;
      if (ioBytes > diskBytes) throw new Error(`disk of ${diskBytes} bytes too small for ${test}`);
      const chunks = Math.floor(diskBytes / ioBytes);
      let cursor = 0;
      const nextSector = (): number => {
        switch (test) {
          case 'null': return 0;
          case 'rand4k': return (rand() % chunks) * (ioBytes / SECTOR);
          default: {
            const s = cursor * (ioBytes / SECTOR);
            cursor = (cursor + 1) % chunks;
            return s;
          }
        }
      };
      const fill = (b: Uint8Array): Uint8Array => {
        if (test === 'seqwrite') for (let i = 0; i < b.length; i += 64) b[i] = (i >>> 6) & 0xff;
        return b;
      };
      const count = ioBytes / SECTOR;
      // One buffer per worker: a Uint8Array (data copied through blkfront's pool pages) or, zero-copy, a BlkBuffer.
      const bufs = zc ? [] : Array.from({ length: qd }, () => fill(new Uint8Array(ioBytes)));
      // Zero-copy buffers are kept from test to test (seqread's serve seqwrite):
      // with persistent grants, a buffer freed while connected stays mapped by
      // the backend until it disconnects, so fresh buffers per test would
      // spend the backend's persistent grants (1056) and fall back to a map
      // and unmap per request (docs/block.md: allocate buffers once, reuse them).
      // A 512-byte read still needs a whole page.
      const zbytes = Math.max(ioBytes, 4096);
      let zbufs: BlkBuffer[] = [];
      if (zc) {
        zbufs = keptBuffers.get(zbytes) ?? [];
        while (zbufs.length < qd) zbufs.push(dev.allocBuffer(zbytes));
        keptBuffers.set(zbytes, zbufs);
        zbufs = zbufs.slice(0, qd);
        if (test === 'seqwrite') for (const b of zbufs) b.write(0, fill(new Uint8Array(ioBytes)));
      }
      let done = 0;
      // The workers stop once the clock passes `until`, read once every
      // CLOCK_EVERY completions (not per I/O: a clock read costs ~0.1 µs, a
      // tenth of a null request); the window is measured at its real end.
      let stop = false;
      let sinceClock = 0;
      const completed = (until: bigint): void => {
        done++;
        if (++sinceClock >= CLOCK_EVERY) {
          sinceClock = 0;
          stop = k.rdtsc() >= until;
        }
      };
      const phase = async (until: bigint): Promise<void> => {
        stop = k.rdtsc() >= until;
        sinceClock = 0;
        const worker = async (buf: Uint8Array): Promise<void> => {
          while (!stop) {
            const s = nextSector();
            if (test === 'seqwrite') await dev.write(s, buf);
            else await dev.readInto(s, buf);
            completed(until);
          }
        };
        const zcWorker = async (buf: BlkBuffer): Promise<void> => {
          while (!stop) {
            const s = nextSector();
            if (test === 'seqwrite') await dev.writePages(s, buf, 0, count);
            else await dev.readPages(s, buf, 0, count);
            completed(until);
          }
        };
        // A callback worker: each completion issues the next I/O from the completion itself.
        const cbWorker = (buf: BlkBuffer): Promise<void> => new Promise<void>((resolve, reject) => {
          const kind = test === 'seqwrite' ? 'write' : 'read';
          const next = (err: Error | undefined): void => {
            if (err) return reject(err);
            if (stop) return resolve();
            const refused = dev.queuePages(kind, nextSector(), buf, 0, count, done);
            if (refused) reject(refused);
          };
          const done = (err: Error | undefined): void => {
            if (!err) completed(until);
            next(err);
          };
          next(undefined);
        });
        await Promise.all(cb ? zbufs.map(cbWorker) : zc ? zbufs.map(zcWorker) : bufs.map(worker));
      };
      await xs.wait(phase(k.rdtsc() + warmNs));
      const c0 = counters(dev, loop);
      done = 0;
      const t0 = k.rdtsc();
      await xs.wait(phase(t0 + runNs));
      const ns = Number(k.rdtsc() - t0);
      const d = delta(c0, counters(dev, loop));
      // Under 199 characters: Xen's console cuts longer lines.
      xen.print(`BENCH ${JSON.stringify({
        t: test, p: f.persistent ? 1 : 0, i: f.maxIndirectSegments, o: f.ringPageOrder, rs: f.ringSize, qd, zc: zc ? 1 : 0, ...(cb ? { cb: 1 } : {}), n: done, ns, ...d,
      })}\n`);
    }
    for (const bs of keptBuffers.values()) for (const b of bs) dev.freeBuffer(b);
    await xs.wait(dev.close());
    xen.shutdown(SHUTDOWN_poweroff);
  } catch (e) {
    say(`FAILED: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
    xen.shutdown(SHUTDOWN_crash);
  }
}
