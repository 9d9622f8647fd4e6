/**
 * `npm run bench`: every benchmark, each printing its table (with its same-run
 * baseline) and rewriting its section of docs/benchmarks.md.
 * `npm run bench -- NAME...` runs only those.
 */
import { benchNullHypercall } from './null-hypercall.ts';
import { benchEvtchn } from './evtchn.ts';
import { benchGnttab } from './gnttab.ts';
import { benchSchedSim, benchSchedThreads } from './sched.ts';
import { benchToolstack, benchXenstore } from './toolstack.ts';
import { benchBlk } from './blk.ts';
import { benchBlkCosts } from './blk-costs.ts';
import { benchPlacement } from './placement.ts';

const BENCHES: Record<string, () => Promise<string>> = {
  'sched-sim': async () => benchSchedSim(),
  'sched-threads': benchSchedThreads,
  'null-hypercall': benchNullHypercall,
  'evtchn-pingpong': benchEvtchn,
  gnttab: benchGnttab,
  toolstack: benchToolstack,
  xenstore: benchXenstore,
  placement: benchPlacement,
  blk: benchBlk,
  'blk-costs': benchBlkCosts,
};

const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
for (const name of wanted.length ? wanted : Object.keys(BENCHES)) {
  const b = BENCHES[name];
  if (!b) {
    console.error(`unknown benchmark ${name}; have: ${Object.keys(BENCHES).join(', ')}`);
    process.exit(2);
  }
  console.log(await b());
  console.log();
}
process.exit(0);
