/**
 * blkback's xenbus state machine, as a table (STYLE.md rule 10): what the
 * backend does when it sees the frontend in a state, given its own state.
 * Follows Linux xen-blkback's frontend_changed (xenbus.c):
 *  - Initialising (and InitWait) while we are Closed: the frontend is
 *    reconnecting; go back to InitWait ("prepare for reconnect");
 *  - Initialised / Connected while we are not Connected: connect the ring
 *    (both states, since two watch events may fire in close succession and
 *    the intermediate value be missed);
 *  - Closing: go Closing;
 *  - Closed: disconnect, go Closed (and if the device is offline, remove it);
 *  - Unknown (the frontend's node is gone): disconnect and close;
 *  - Reconfiguring / Reconfigured: blkback does not reconfigure; fatal
 *    ("saw state %d at frontend").
 */
import type { XenbusStateName } from '../../shared/xenbus/state.ts';

export type FrontendAction = 'ignore' | 'connect' | 'closing' | 'close' | 'reinit' | 'fatal';

type Row = { readonly [our in XenbusStateName]?: FrontendAction } & { readonly else: FrontendAction };

export const FRONTEND_CHANGED: Readonly<Record<XenbusStateName, Row>> = {
  Unknown: { Closed: 'ignore', else: 'close' },
  Initialising: { Closed: 'reinit', else: 'ignore' },
  InitWait: { Closed: 'reinit', else: 'ignore' },
  Initialised: { Initialising: 'connect', InitWait: 'connect', else: 'ignore' },
  Connected: { Initialising: 'connect', InitWait: 'connect', else: 'ignore' },
  Closing: { Closing: 'ignore', Closed: 'ignore', else: 'closing' },
  Closed: { Closed: 'ignore', else: 'close' },
  Reconfiguring: { Closing: 'ignore', Closed: 'ignore', else: 'fatal' },
  Reconfigured: { Closing: 'ignore', Closed: 'ignore', else: 'fatal' },
};

/** The action for the frontend in `front` ("unknown": an unparsable state node) while we are in `ours`. */
export function frontendAction(front: XenbusStateName | 'unknown', ours: XenbusStateName): FrontendAction {
  if (front === 'unknown') return ours === 'Closing' || ours === 'Closed' ? 'ignore' : 'fatal';
  const row = FRONTEND_CHANGED[front];
  return row[ours] ?? row.else;
}
