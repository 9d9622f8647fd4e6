/**
 * xl.cfg files from disk: read, parse, and make their paths absolute and
 * checked, for `xl create` and for the host's example configurations
 * (domU/configs/*.cfg, which `npm start` creates).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { parseXlCfg, type DomainConfig } from './xlcfg.ts';

/** A path in a config that does not exist on the host (the file and the key say where). */
export class ConfigPathError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigPathError';
  }
}

/**
 * Make the config's kernel and disk paths absolute, relative ones taken from
 * `baseDir` (xl's current directory, as xl opens them), and check that they
 * exist, so that the host is never asked to build a domain it cannot.
 * Throws ConfigPathError naming the file and the path.
 */
export function resolveConfigPaths(c: DomainConfig, baseDir: string, file: string, exists: (p: string) => boolean = existsSync): DomainConfig {
  const abs = (p: string): string => (isAbsolute(p) ? p : resolve(baseDir, p));
  const kernel = abs(c.kernel);
  if (!exists(kernel)) throw new ConfigPathError(`${file}: kernel "${c.kernel}" does not exist (${kernel}; relative paths are taken from ${baseDir})`);
  const disks = c.disks.map((d) => {
    if (d.target === '') return d;
    const target = abs(d.target);
    // size= (our extension) creates a missing target: the host makes it.
    if (d.size === undefined && !exists(target)) throw new ConfigPathError(`${file}: disk ${d.vdev}: target "${d.target}" does not exist (${target})`);
    return { ...d, target };
  });
  return { ...c, kernel, disks };
}

/**
 * Read and parse one config file, its relative paths resolved from
 * `baseDir`. Throws XlCfgError (bad contents), ConfigPathError (missing
 * kernel or disk) or the read error.
 */
export function readXlCfgFile(path: string, baseDir: string, extra: readonly string[] = []): DomainConfig {
  const text = readFileSync(path, 'utf8');
  return resolveConfigPaths(parseXlCfg(text, { file: path, extra }), baseDir, path);
}

/** Every `*.cfg` of `dir`, in name order: each parsed config, or why it could not be. */
export function readXlCfgDir(dir: string, baseDir: string): Array<{ readonly file: string; readonly config?: DomainConfig; readonly error?: Error }> {
  return readdirSync(dir).filter((f) => f.endsWith('.cfg')).sort().map((f) => {
    const file = join(dir, f);
    try {
      return { file, config: readXlCfgFile(file, baseDir) };
    } catch (e) {
      return { file, error: e instanceof Error ? e : new Error(String(e)) };
    }
  });
}
