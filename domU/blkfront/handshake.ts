/**
 * blkfront's side of the XenbusState handshake as a transition table
 * (STYLE.md rule 10): given our own state and the backend's, what to do.
 * Pure: blkfront.ts runs the action (which moves our state) and looks again.
 *
 *   we \ backend   InitWait  Connected  Closing            Closed / gone
 *   Initialising   talk      -          front-close        check-unplug
 *   Initialised    -         connect    front-close        backend-closed
 *   Connected      -         -          front-close        backend-closed
 *   Closing        b-closed  -          close-when-drained backend-closed
 *   Closed         restart   -          -                  check-unplug
 *
 *  talk: ring, grants, port, keys in one transaction; we Initialised(3).
 *  connect: read the disk and features; we Connected(4); issue what waits
 *    (first what a lost backend left unanswered: blkif_recover).
 *  front-close: we Closing(5): nothing more is issued; responses are still
 *    consumed.
 *  close-when-drained: once nothing is in flight, go Closed(6) (a
 *    Linux-style backend unmaps and goes Closed when we do).
 *  backend-closed: the backend is gone without us: take its last responses,
 *    tear the ring down keeping what it did not answer, go Closed.
 *  check-unplug: tear the ring down (the backend has unmapped it); closed by us or the ring broken -> finalise; `online` 0 or
 *    the backend gone (hot-unplug) -> fail what is left, finalise; else wait
 *    for the backend to come back (InitWait).
 *  restart: tear the old ring down; we Initialising(1); then talk.
 */
import type { XenbusStateName } from '../../shared/xenbus/state.ts';

export type HandshakeAction =
  | 'none' | 'talk' | 'connect' | 'front-close' | 'close-when-drained' | 'backend-closed' | 'check-unplug' | 'restart';

/** The backend's state as we read it: a XenbusState, a value we do not know, or no node at all. */
export type BackendState = XenbusStateName | 'unknown' | 'gone';

type Row = Partial<Record<BackendState, HandshakeAction>>;

const LIVE: Row = { Closing: 'front-close', Closed: 'backend-closed', gone: 'backend-closed' };

export const HANDSHAKE_TABLE: Readonly<Partial<Record<XenbusStateName, Row>>> = {
  Initialising: { InitWait: 'talk', Closing: 'front-close', Closed: 'check-unplug', gone: 'check-unplug' },
  Initialised: { Connected: 'connect', ...LIVE },
  Connected: { ...LIVE },
  Closing: { InitWait: 'backend-closed', Closing: 'close-when-drained', Closed: 'backend-closed', gone: 'backend-closed' },
  Closed: { InitWait: 'restart', Closed: 'check-unplug', gone: 'check-unplug' },
};

/** The action for our state `front` when the backend is in `back`. */
export function handshakeAction(front: XenbusStateName, back: BackendState): HandshakeAction {
  return HANDSHAKE_TABLE[front]?.[back] ?? 'none';
}
