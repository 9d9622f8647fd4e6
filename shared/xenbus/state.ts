/**
 * XenbusState (xen/include/public/io/xenbus.h): the state each end of a split
 * driver publishes in its `state` node, and a state machine for drivers with
 * the transitions the handshake allows, as a table.
 *
 * The handshake (XEN-ABI-FACTS.md "XenbusState"): the backend publishes its
 * features and goes InitWait; the frontend sets up its ring, publishes the
 * refs and goes Initialised (or straight to Connected, as netfront does); the
 * backend maps the ring, publishes its details and goes Connected; the
 * frontend goes Connected. Either end closes with Closing then Closed; a
 * Closed end may start again (Initialising). Reconfiguring/Reconfigured bracket
 * a live reconfiguration of a Connected device.
 */

/** Xen's numbers; never renumber. */
export const XenbusState = {
  Unknown: 0,
  Initialising: 1,
  InitWait: 2,
  Initialised: 3,
  Connected: 4,
  Closing: 5,
  Closed: 6,
  Reconfiguring: 7,
  Reconfigured: 8,
} as const;
export type XenbusStateName = keyof typeof XenbusState;

const NAMES: ReadonlyMap<number, XenbusStateName> = new Map(
  (Object.entries(XenbusState) as Array<[XenbusStateName, number]>).map(([k, v]) => [v, k]),
);

/** The name of a state number; "unknown" (lower case: not Xen's Unknown 0) for any other number. */
export function xenbusStateName(n: number): XenbusStateName | 'unknown' {
  return NAMES.get(n) ?? 'unknown';
}

/** A `state` node's value ("4") as a state; "unknown" for anything that is not a decimal state number. */
export function parseXenbusState(value: string): XenbusStateName | 'unknown' {
  return /^\d{1,2}$/.test(value.trim()) ? xenbusStateName(Number(value.trim())) : 'unknown';
}

/** The value to write to a `state` node. */
export function formatXenbusState(s: XenbusStateName): string {
  return String(XenbusState[s]);
}

/**
 * The states an end may move its own state to from each state. Moving to the
 * state it is already in is always allowed and changes nothing (as Linux's
 * xenbus_switch_state).
 */
export const XENBUS_TRANSITIONS: Readonly<Record<XenbusStateName, readonly XenbusStateName[]>> = {
  Unknown: ['Initialising', 'Closed'],
  Initialising: ['InitWait', 'Initialised', 'Connected', 'Closing', 'Closed'],
  InitWait: ['Initialised', 'Connected', 'Closing', 'Closed'],
  Initialised: ['Connected', 'Closing', 'Closed'],
  Connected: ['Reconfiguring', 'Closing', 'Closed'],
  Reconfiguring: ['Reconfigured', 'Closing', 'Closed'],
  Reconfigured: ['Connected', 'Closing', 'Closed'],
  Closing: ['Closed'],
  Closed: ['Initialising', 'Unknown'],
};

export type TransitionResult =
  | { readonly ok: true; readonly from: XenbusStateName; readonly to: XenbusStateName; readonly changed: boolean }
  | { readonly ok: false; readonly from: XenbusStateName; readonly to: XenbusStateName };

/**
 * One end's own XenbusState. `go` applies a transition from the table and
 * reports it; an illegal one leaves the state as it was (never throws: the
 * caller decides whether that is a bug or a peer's misbehaviour).
 */
export class XenbusStateMachine {
  private current: XenbusStateName;
  private readonly listeners: Array<(from: XenbusStateName, to: XenbusStateName) => void> = [];

  constructor(initial: XenbusStateName = 'Initialising') {
    this.current = initial;
  }

  get state(): XenbusStateName { return this.current; }

  canGo(to: XenbusStateName): boolean {
    return to === this.current || XENBUS_TRANSITIONS[this.current].includes(to);
  }

  go(to: XenbusStateName): TransitionResult {
    const from = this.current;
    if (!this.canGo(to)) return { ok: false, from, to };
    if (to === from) return { ok: true, from, to, changed: false };
    this.current = to;
    for (const l of this.listeners) l(from, to);
    return { ok: true, from, to, changed: true };
  }

  /** Called after every change of state. */
  onChange(l: (from: XenbusStateName, to: XenbusStateName) => void): void {
    this.listeners.push(l);
  }
}

/** What `switchState` needs of a xenbus client. */
export interface StateWriter {
  write(path: string, value: string): Promise<void>;
}

/**
 * Move `sm` to `to` and publish it at `<nodePath>/state` (xenbus_switch_state).
 * Returns the transition; an illegal one is not written, and a failed write leaves `sm` as it was.
 */
export async function switchState(xb: StateWriter, nodePath: string, sm: XenbusStateMachine, to: XenbusStateName): Promise<TransitionResult> {
  if (!sm.canGo(to)) return { ok: false, from: sm.state, to };
  if (to !== sm.state) await xb.write(`${nodePath}/state`, formatXenbusState(to));
  return sm.go(to);
}
