/**
 * The guests Dom0 builds at start, as its command line names them:
 *  - `configs=<dir>`: every xl.cfg file of the directory (relative to the
 *    project root), as `xl create` would read them;
 *  - `guest=<name>=<kernel.ts>[:MiB]`: a quick PV guest (max_mem twice MiB).
 * A file or spec that does not parse is an error naming it; nothing is built.
 */
import path from 'node:path';
import type { PvBuildConfig } from '../builder.ts';
import { readXlCfgDir } from './load.ts';
import { toPvBuildConfig } from './xlcfg.ts';

export function parseGuestSpec(spec: string): PvBuildConfig {
  const m = /^([A-Za-z0-9_.-]+)=([^:]+)(?::(\d+))?$/.exec(spec);
  if (!m) throw new Error(`guest ${spec}: expected name=path/to/kernel.ts[:MiB]`);
  const mib = m[3] ? Number(m[3]) : 4;
  return { name: m[1], kernel: m[2], memoryMiB: mib, maxmemMiB: mib * 2 };
}

export function guestsOfConfigDir(dir: string, root: string): PvBuildConfig[] {
  const loaded = readXlCfgDir(path.resolve(root, dir), root);
  const bad = loaded.filter((l) => l.error);
  if (bad.length > 0) throw new Error(bad.map((b) => b.error!.message).join('\n'));
  return loaded.map((l) => toPvBuildConfig(l.config!));
}
