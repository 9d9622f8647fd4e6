/**
 * The node tree and the overlays every change goes through.
 *
 * Every operation runs against an `Overlay`: a private map of written and
 * deleted nodes over a base (the committed `Tree`, or a transaction's overlay).
 * A single request's overlay is merged into its base only when the request
 * succeeds, so a request that fails half-way (a quota hit while creating
 * parents) leaves nothing behind.
 *
 * Transactions (xenstore.txt, "Transactions"; C xenstored's per-node generation
 * scheme): a transaction is an overlay over the tree that records, for every
 * node it reads or writes, the generation the tree had for that path at first
 * access (NO_GENERATION for "absent"). At TRANSACTION_END "T" the transaction
 * commits only if each recorded generation is still current: any intervening
 * change to a node it touched - a write, a create, a delete - makes the commit
 * fail with EAGAIN. Changes to nodes it never touched do not conflict
 * (xenstore.txt: "only intervening `conflicting' writes cause EAGAIN").
 * Reading a parent to add a child counts as touching the parent.
 *
 * Every committed change to a node gives it a fresh generation from one
 * counter, so generations are never reused (DIRECTORY_PART relies on this).
 */
import type { PermList } from './perms.ts';

export interface XsNode {
  readonly value: Uint8Array;
  /** [0] is the owner and everyone else's default. */
  readonly perms: PermList;
  /** Child names in creation order. */
  readonly children: readonly string[];
  /** Generation count; provisional inside an uncommitted overlay. */
  readonly generation: number;
}

export const NO_GENERATION = -1;

/** A pending watch event, produced by a change and fired when the change commits. */
export interface ChangeEvent {
  readonly path: string;
  /** Exact events reach only watches on exactly `path` (descendants of a removed node). */
  readonly exact: boolean;
  /** The node's permissions at the change (before removal, for removed nodes). */
  readonly perms: PermList;
  /** The permissions before a SET_PERMS: a watcher losing access still hears of it. */
  readonly oldPerms?: PermList;
}

export interface NodeSource {
  get(path: string): XsNode | undefined;
  /** Nodes owned by `domid`, as this view sees the tree. */
  ownedCount(domid: number): number;
}

/** The committed tree. */
export class Tree implements NodeSource {
  readonly nodes = new Map<string, XsNode>();
  private owned = new Map<number, number>();
  /** The last generation handed out. */
  generation = 0;

  get(path: string): XsNode | undefined { return this.nodes.get(path); }
  ownedCount(domid: number): number { return this.owned.get(domid) ?? 0; }

  /** Store a node as it is (setup and bookkeeping; no generation change). */
  setRaw(path: string, node: XsNode): void {
    const old = this.nodes.get(path);
    if (old) this.addOwned(old.perms[0].domid, -1);
    this.nodes.set(path, node);
    this.addOwned(node.perms[0].domid, 1);
  }

  /** Apply an overlay's changes, each changed node getting a fresh generation. */
  apply(o: Overlay): void {
    for (const [path, node] of o.writes) {
      const old = this.nodes.get(path);
      if (old) this.addOwned(old.perms[0].domid, -1);
      if (node === null) {
        this.nodes.delete(path);
      } else {
        this.nodes.set(path, { ...node, generation: ++this.generation });
        this.addOwned(node.perms[0].domid, 1);
      }
    }
  }

  private addOwned(domid: number, d: number): void {
    const n = (this.owned.get(domid) ?? 0) + d;
    if (n === 0) this.owned.delete(domid);
    else this.owned.set(domid, n);
  }
}

/**
 * Changes over a base. With `record`, every read that reaches the committed
 * tree records the generation it saw (transactions); `touched` counts the
 * distinct paths read or written.
 */
export class Overlay implements NodeSource {
  readonly writes = new Map<string, XsNode | null>();
  readonly events: ChangeEvent[] = [];
  /** path -> generation seen in the tree at first access (recording overlays only). */
  readonly seen = new Map<string, number>();
  private readonly ownedDelta = new Map<number, number>();

  constructor(readonly base: NodeSource, readonly record = false) {}

  get(path: string): XsNode | undefined {
    const w = this.writes.get(path);
    if (w !== undefined) return w ?? undefined;
    const n = this.base.get(path);
    if (this.record && !this.seen.has(path)) this.seen.set(path, n ? n.generation : NO_GENERATION);
    return n;
  }

  ownedCount(domid: number): number {
    return this.base.ownedCount(domid) + (this.ownedDelta.get(domid) ?? 0);
  }

  put(path: string, node: XsNode): void {
    const old = this.get(path);
    if (old) this.addOwned(old.perms[0].domid, -1);
    this.addOwned(node.perms[0].domid, 1);
    this.writes.set(path, node);
  }

  delete(path: string): void {
    const old = this.get(path);
    if (!old) return;
    this.addOwned(old.perms[0].domid, -1);
    this.writes.set(path, null);
  }

  /** Distinct paths this overlay has read from its base or written. */
  get touched(): number {
    let n = this.seen.size;
    for (const p of this.writes.keys()) if (!this.seen.has(p)) n++;
    return n;
  }

  /** How many paths `touched` would count after merging `child`. */
  touchedWith(child: Overlay): number {
    let n = this.touched;
    for (const p of child.writes.keys()) if (!this.seen.has(p) && !this.writes.has(p)) n++;
    return n;
  }

  /** Fold a child overlay (one request's changes) into this one. */
  merge(child: Overlay): void {
    for (const [path, node] of child.writes) {
      if (node === null) this.delete(path);
      else this.put(path, node);
    }
    this.events.push(...child.events);
  }

  /** Does any node this overlay touched have a different generation in `tree` now? */
  conflicts(tree: Tree): boolean {
    for (const [path, gen] of this.seen) {
      const n = tree.get(path);
      if ((n ? n.generation : NO_GENERATION) !== gen) return true;
    }
    return false;
  }

  private addOwned(domid: number, d: number): void {
    this.ownedDelta.set(domid, (this.ownedDelta.get(domid) ?? 0) + d);
  }
}

/** An open transaction of one connection. */
export interface Transaction {
  readonly id: number;
  readonly overlay: Overlay;
}
