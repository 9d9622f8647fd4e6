/**
 * Branded identifiers (STYLE.md rule 5): values that must never be mixed up by
 * accident. A brand costs nothing at run time; constructing one is an explicit
 * statement that the number has been range-checked (or comes from trusted code).
 */
declare const brand: unique symbol;
type Brand<T, B extends string> = T & { readonly [brand]: B };

/** domid_t (u16), xen.h. */
export type DomId = Brand<number, 'DomId'>;
/** Guest frame number: an index into a domain's physmap (P2M). */
export type Gfn = Brand<number, 'Gfn'>;
/** Machine frame number: an index into the host's frame table. */
export type Mfn = Brand<number, 'Mfn'>;
/** vCPU index within its domain. */
export type VcpuId = Brand<number, 'VcpuId'>;
/** evtchn_port_t (u32), event_channel.h. */
export type EvtchnPort = Brand<number, 'EvtchnPort'>;
/** grant_ref_t (u32), grant_table.h. */
export type GrantRef = Brand<number, 'GrantRef'>;

export const domid = (n: number): DomId => n as DomId;
export const gfn = (n: number): Gfn => n as Gfn;
export const mfn = (n: number): Mfn => n as Mfn;
export const vcpuId = (n: number): VcpuId => n as VcpuId;
export const evtchnPort = (n: number): EvtchnPort => n as EvtchnPort;
export const grantRef = (n: number): GrantRef => n as GrantRef;

/** Special domain ids (xen.h). */
export const DOMID_FIRST_RESERVED = 0x7ff0;
export const DOMID_SELF = 0x7ff0 as DomId;
export const DOMID_IO = 0x7ff1 as DomId;
export const DOMID_XEN = 0x7ff2 as DomId;
export const DOMID_COW = 0x7ff3 as DomId;
export const DOMID_INVALID = 0x7ff4 as DomId;
export const DOMID_IDLE = 0x7fff as DomId;

/** Page geometry: 4 KiB frames everywhere. */
export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 1 << PAGE_SHIFT;
