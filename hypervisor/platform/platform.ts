/**
 * The platform ("hardware"), on the main thread: machine memory, the shared
 * hypervisor state, the timer thread and one thread per vCPU, started and
 * stopped on the hypervisor's request. It runs no hypervisor policy of its own
 * beyond start of day (boot.ts) and reporting threads that exit.
 */
import { Worker } from 'node:worker_threads';
import { logger } from '../../shared/log.ts';
import { SHUTDOWN_crash } from '../../shared/hypercall.ts';
import { constructDom0, initState, startDom0, type Dom0Params } from '../boot.ts';
import type { HostConfig } from '../config.ts';
import { vcpuKick, vcpuThreadExited } from '../domain.ts';
import type { PlatformPort, PlatformRequest } from '../platform-port.ts';
import { pcpuThreadExited } from '../sched/pcpu.ts';
import { serialRxPut } from '../serial.ts';
import { sendDom0Virq } from '../evtchn/evtchn.ts';
import { VIRQ_CONSOLE } from '../../shared/abi/event-channel.ts';
import { D, G, HvState, V, VTHREAD_EXITED } from '../state.ts';

const log = logger('platform');

/**
 * Whether this process runs V8 without helper threads (`node --single-threaded`,
 * as `npm start` and `npm run bench` start the host). Then each isolate's
 * garbage collection and JIT compilation run on its own thread: a domain's GC
 * is done, and charged, on its own vCPU, and no V8 helper thread takes a core
 * from a vCPU thread (docs/architecture.md, "V8 helper threads").
 */
export function v8SingleThreaded(): boolean {
  return process.execArgv.includes('--single-threaded');
}

/** How long a killed vCPU thread may take to reach a preemption point. */
const KILL_GRACE_MS = 100;
const BOOT_WORKER = new URL('./boot-worker.mjs', import.meta.url);
const VCPU_ENTRY = new URL('../vcpu/thread.ts', import.meta.url).href;
const TIMER_ENTRY = new URL('../timer/thread.ts', import.meta.url).href;

interface VcpuThread {
  readonly worker: Worker;
  readonly slot: number;
  readonly vcpu: number;
  readonly generation: number;
}

export class Platform implements PlatformPort {
  readonly hv: HvState;
  /** Resolves with Dom0's shutdown reason when the host halts. */
  readonly halted: Promise<number>;
  private resolveHalted!: (code: number) => void;
  private readonly threads = new Map<string, VcpuThread>();
  /** Workers this platform terminated (a destroyed domain's threads), not failures. */
  private readonly terminated = new Set<Worker>();
  private timer?: Worker;
  private haltCode: number | null = null;

  constructor(readonly cfg: HostConfig) {
    this.hv = new HvState(cfg, HvState.allocate(cfg));
    this.halted = new Promise((r) => { this.resolveHalted = r; });
  }

  /** Power on: initialise the state, start the timer, build and start Dom0. */
  boot(dom0: Dom0Params): void {
    initState(this.hv);
    this.timer = this.spawn(TIMER_ENTRY, {});
    // The timer interrupt is part of the machine: without it nothing is scheduled; halt.
    this.timer.on('error', (e) => {
      log.fatal({ err: e.message }, 'timer thread failed: halting the host');
      this.halt(SHUTDOWN_crash);
    });
    const slot = constructDom0(this.hv, dom0, this);
    startDom0(this.hv, slot, this);
    log.info({ pcpus: this.cfg.pcpus, memMiB: this.cfg.memMiB, sched: this.cfg.sched, v8SingleThreaded: v8SingleThreaded() }, 'host booted');
  }

  private spawn(entry: string, extra: object): Worker {
    return new Worker(BOOT_WORKER, {
      workerData: { entry, cfg: this.cfg, buffers: this.hv.buffers, ...extra },
      stdout: false,
      stderr: false,
    });
  }

  startVcpu(slot: number, vcpu: number, generation: number): void {
    if (this.haltCode !== null) return;
    const key = `${slot}.${vcpu}`;
    const worker = this.spawn(VCPU_ENTRY, { slot, vcpu });
    const t: VcpuThread = { worker, slot, vcpu, generation };
    this.threads.set(key, t);
    let failure: string | null = null;
    worker.on('message', (m: PlatformRequest) => this.request(m));
    worker.on('error', (e: Error) => { failure = `${e.name}: ${e.message}`; });
    worker.on('exit', (code) => {
      if (this.threads.get(key) === t) this.threads.delete(key);
      const hv = this.hv;
      Atomics.store(hv.vcpu, hv.v(slot, vcpu, V.thread), VTHREAD_EXITED);
      // The scheduler frees whatever pCPU the thread held or had been granted.
      pcpuThreadExited(hv, slot, vcpu, generation);
      // A thread we terminated after a kill's grace period did not die: it was stopped.
      const abnormal = failure ?? (code !== 0 && !this.terminated.has(worker) ? `exit code ${code}` : null);
      this.terminated.delete(worker);
      vcpuThreadExited(hv, slot, vcpu, generation, abnormal, this);
      if (abnormal) log.warn({ slot, vcpu, reason: abnormal }, 'vcpu thread died');
    });
  }

  /**
   * Stop a domain's threads: each is kicked and leaves at its next preemption
   * point (never inside the hypervisor, so it holds no lock). A thread still
   * running guest code after the grace period is terminated.
   */
  killDomain(slot: number, generation: number): void {
    for (const t of this.threads.values()) {
      if (t.slot === slot && t.generation === generation) {
        vcpuKick(this.hv, slot, t.vcpu);
        setTimeout(() => {
          if (![...this.threads.values()].includes(t)) return;
          this.terminated.add(t.worker);
          void t.worker.terminate();
        }, KILL_GRACE_MS).unref();
      }
    }
  }

  halt(code: number): void {
    if (this.haltCode !== null) return;
    this.haltCode = code;
    void this.stop().then(() => this.resolveHalted(code));
  }

  /** Typed input for the serial console (CONSOLEIO_read). */
  serialInput(data: Uint8Array): number {
    const n = serialRxPut(this.hv, data);
    if (n > 0) sendDom0Virq(this.hv, VIRQ_CONSOLE);
    return n;
  }

  private request(m: PlatformRequest): void {
    switch (m.kind) {
      case 'start-vcpu': return this.startVcpu(m.slot, m.vcpu, m.generation);
      case 'kill-domain': return this.killDomain(m.slot, m.generation);
      case 'halt': return this.halt(m.code);
    }
  }

  /** Stop every thread: halt flag, wake everyone, wait for the exits. */
  async stop(): Promise<void> {
    const hv = this.hv;
    Atomics.store(hv.g, G.HALT, 1);
    Atomics.add(hv.g, G.TIMER_WAKE, 1);
    Atomics.notify(hv.g, G.TIMER_WAKE);
    const exits: Promise<unknown>[] = [];
    for (const t of this.threads.values()) {
      exits.push(new Promise((r) => t.worker.once('exit', r)));
      vcpuKick(hv, t.slot, t.vcpu);
    }
    // Give threads a moment to leave on their own (flushing output), then force.
    const grace = new Promise((r) => setTimeout(r, 200));
    await Promise.race([Promise.all(exits), grace]);
    await Promise.all([...this.threads.values()].map((t) => t.worker.terminate()));
    if (this.timer) await this.timer.terminate();
    if (this.haltCode === null) this.haltCode = SHUTDOWN_crash;
  }

  /** Live vCPU threads (for leak checks). */
  get liveThreads(): number {
    return this.threads.size;
  }

  /** Domains present in the table (any state but free). */
  domainCount(): number {
    let n = 0;
    for (let s = 0; s < this.cfg.maxDomains; s++) if (Atomics.load(this.hv.dom, this.hv.d(s, D.state)) !== 0) n++;
    return n;
  }
}
