/** Config files from disk: the example configurations, and paths that do not exist. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigPathError, readXlCfgDir, readXlCfgFile } from '../../../dom0/toolstack/load.ts';
import { XlCfgError } from '../../../dom0/toolstack/xlcfg.ts';

const ROOT = resolve(import.meta.dirname, '../../..');
const dir = mkdtempSync(join(tmpdir(), 'xlcfg-load-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('reading configs', () => {
  it('reads every example configuration, paths made absolute from the project root', () => {
    const all = readXlCfgDir(join(ROOT, 'domU/configs'), ROOT);
    expect(all.length).toBeGreaterThan(0);
    for (const r of all) expect(r.error).toBeUndefined();
    expect(all.find((r) => r.file.endsWith('hello.cfg'))?.config).toMatchObject({ name: 'hello', kernel: join(ROOT, 'domU/guests/hello.ts') });
  });

  it('names the file and the path that does not exist', () => {
    const f = join(dir, 'a.cfg');
    writeFileSync(f, 'name = "a"\nkernel = "k.ts"\n');
    expect(() => readXlCfgFile(f, dir)).toThrow(ConfigPathError);
    expect(() => readXlCfgFile(f, dir)).toThrow(`${f}: kernel "k.ts" does not exist`);
    writeFileSync(join(dir, 'k.ts'), '');
    writeFileSync(f, 'name = "a"\nkernel = "k.ts"\ndisk = [ "/no/such.img,raw,xvda,w" ]\n');
    expect(() => readXlCfgFile(f, dir)).toThrow(`${f}: disk xvda: target "/no/such.img" does not exist`);
  });

  it('keeps going past a bad file in a directory', () => {
    writeFileSync(join(dir, 'b.cfg'), 'name = \n');
    const r = readXlCfgDir(dir, dir);
    expect(r.map((x) => [x.file.slice(dir.length + 1), x.error?.constructor.name])).toEqual([['a.cfg', 'ConfigPathError'], ['b.cfg', XlCfgError.name]]);
  });
});
