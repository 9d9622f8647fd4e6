/**
 * Requests the hypervisor makes of the platform ("hardware"): start a thread for
 * a vCPU, stop every thread of a domain. Control plane only: posted, never
 * awaited on a hypercall path. The main thread implements it directly; vCPU
 * threads forward it to the main thread with postMessage.
 */
export interface PlatformPort {
  /** Start the thread of vCPU `vcpu` of domain slot `slot` (generation guards slot reuse). */
  startVcpu(slot: number, vcpu: number, generation: number): void;
  /** Stop every thread of the domain in `slot`; the platform reports each exit. */
  killDomain(slot: number, generation: number): void;
  /** The host halts (Dom0 shut down): `code` is Dom0's SHUTDOWN_* reason. */
  halt(code: number): void;
}

/** Messages a vCPU thread posts to the platform. */
export type PlatformRequest =
  | { readonly kind: 'start-vcpu'; readonly slot: number; readonly vcpu: number; readonly generation: number }
  | { readonly kind: 'kill-domain'; readonly slot: number; readonly generation: number }
  | { readonly kind: 'halt'; readonly code: number };

/** A port that records requests (single-threaded tests of hypercall policy). */
export class RecordingPort implements PlatformPort {
  readonly requests: PlatformRequest[] = [];
  startVcpu(slot: number, vcpu: number, generation: number): void {
    this.requests.push({ kind: 'start-vcpu', slot, vcpu, generation });
  }
  killDomain(slot: number, generation: number): void {
    this.requests.push({ kind: 'kill-domain', slot, generation });
  }
  halt(code: number): void {
    this.requests.push({ kind: 'halt', code });
  }
}
