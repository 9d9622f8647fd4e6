/**
 * The example block-device guest: connects blkfront to its first virtual
 * disk (xvda in domU/configs/blkdemo.cfg, a sparse image file Dom0's blkback
 * serves), then
 *   1. reads the run record in sector 0 that the previous run left there (the
 *      disk outlives the guest: the image file is kept);
 *   2. writes a pattern derived from this run's number over 1 MiB, with many
 *      requests in flight, and flushes (FLUSH_DISKCACHE: Dom0 answers only
 *      once the data is durable on the host, fdatasync);
 *   3. reads it back and verifies every byte;
 *   4. writes the new run record, flushes, and powers off.
 * Its console lines say what it found; "blkdemo: verified" means the round
 * trip was exact.
 *
 * Command line (extra=): `runs=N` writes and verifies N patterns (default 1).
 */
import type { KernelApi } from '../../shared/guest/api.ts';
import { Xen } from '../../shared/guest/xen.ts';
import { EventChannels } from '../../shared/guest/evtchn.ts';
import { GrantTable } from '../../shared/guest/gnttab.ts';
import { GuestXenbus } from '../../shared/guest/xenbus.ts';
import { SHUTDOWN_crash, SHUTDOWN_poweroff } from '../../shared/hypercall.ts';
import { BlockFront } from '../blkfront/blkfront.ts';

/** Run record in sector 0: magic, run number. */
const MAGIC = 0x58424c4b; // "XBLK"
/** Bytes of pattern written per run, and per request. */
const PATTERN_BYTES = 1 << 20;
const CHUNK = 64 << 10;
const SECTOR = 512;

/** The pattern byte at `offset` of run `run`: different for every run and offset. */
export function patternByte(run: number, offset: number): number {
  return (Math.imul(offset >>> 2, 2654435761) + Math.imul(run, 40503) + (offset & 3)) >>> 24;
}

function fillPattern(buf: Uint8Array, run: number, base: number): void {
  for (let i = 0; i < buf.length; i++) buf[i] = patternByte(run, base + i);
}

export default async function blkdemo(k: KernelApi): Promise<void> {
  const xen = new Xen(k);
  const ev = new EventChannels(xen);
  const gnttab = new GrantTable(xen);
  const xs = new GuestXenbus(ev);
  const say = (s: string): void => xen.print(`blkdemo: ${s}\n`);
  const runs = Number(/(?:^|\s)runs=(\d+)/.exec(xen.cmdline)?.[1] ?? 1);
  try {
    const devids = await xs.wait(xs.client.directory('device/vbd'));
    if (devids.length === 0) throw new Error('no virtual disk (disk = [...] in the config)');
    const dev = await xs.wait(BlockFront.connect({ ev, gnttab, xs: xs.client, devid: Number(devids[0]) }));
    const f = dev.features;
    say(`connected to ${dev.backendPath}: ${dev.sectors} sectors of ${dev.sectorSize} bytes${dev.readOnly ? ', read-only' : ''}; `
      + `ring of ${f.ringSize}, persistent grants ${f.persistent ? 'on' : 'off'}, indirect segments ${f.maxIndirectSegments}, `
      + `flush ${f.flushCache ? 'yes' : 'no'}, barrier ${f.barrier ? 'yes' : 'no'}, discard ${f.discard ? 'yes' : 'no'}`);
    if (dev.sectors * SECTOR < PATTERN_BYTES + SECTOR) throw new Error(`disk too small: need ${(PATTERN_BYTES + SECTOR) / SECTOR} sectors`);

    // 1. What the last run left.
    const rec = await xs.wait(dev.read(0, 1));
    const rv = new DataView(rec.buffer);
    let run = 0;
    if (rv.getUint32(0, true) === MAGIC) {
      run = rv.getUint32(4, true);
      const prev = new Uint8Array(CHUNK);
      await xs.wait(dev.readInto(1, prev));
      let same = true;
      for (let i = 0; i < prev.length && same; i++) same = prev[i] === patternByte(run, i);
      say(`found run ${run}'s record; its pattern ${same ? 'is intact' : 'is NOT intact'}`);
    } else {
      say('blank disk (no run record)');
    }

    for (let r = 0; r < runs; r++) {
      run++;
      // 2. Write the pattern, all chunks in flight at once, then flush.
      const writes: Array<Promise<void>> = [];
      for (let off = 0; off < PATTERN_BYTES; off += CHUNK) {
        const buf = new Uint8Array(CHUNK);
        fillPattern(buf, run, off);
        writes.push(dev.write(1 + off / SECTOR, buf));
      }
      await xs.wait(Promise.all(writes));
      await xs.wait(dev.flush());
      // 3. Read back and verify.
      const back = new Uint8Array(PATTERN_BYTES);
      const reads: Array<Promise<void>> = [];
      for (let off = 0; off < PATTERN_BYTES; off += CHUNK) reads.push(dev.readInto(1 + off / SECTOR, back.subarray(off, off + CHUNK)));
      await xs.wait(Promise.all(reads));
      let bad = -1;
      for (let i = 0; i < back.length && bad < 0; i++) if (back[i] !== patternByte(run, i)) bad = i;
      if (bad >= 0) throw new Error(`run ${run}: byte ${bad} reads back 0x${back[bad].toString(16)}, wrote 0x${patternByte(run, bad).toString(16)}`);
      // 4. The run record, durable before we go.
      const out = new Uint8Array(SECTOR);
      const ov = new DataView(out.buffer);
      ov.setUint32(0, MAGIC, true);
      ov.setUint32(4, run, true);
      await xs.wait(dev.write(0, out));
      await xs.wait(dev.flush());
      say(`run ${run}: wrote ${PATTERN_BYTES >> 10} KiB in ${PATTERN_BYTES / CHUNK} requests of ${CHUNK >> 10} KiB, flushed, read back: verified`);
    }
    const s = dev.stats;
    say(`requests: ${s.requests.read} read, ${s.requests.write} write, ${s.requests.flush} flush, ${s.requests.indirect} indirect; `
      + `${s.notifies} notifications for ${s.responses} responses`);
    await xs.wait(dev.close());
    xen.shutdown(SHUTDOWN_poweroff);
  } catch (e) {
    say(`FAILED: ${e instanceof Error ? e.message : String(e)}`);
    xen.shutdown(SHUTDOWN_crash);
  }
}
