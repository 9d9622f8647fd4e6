/**
 * xl's virtual block device commands (tools/xl/xl_block.c): block-attach,
 * block-detach, block-list. Usage, messages and output as xl's:
 *
 *   block-attach <Domain> <disk-spec-component(s)>...
 *       unknown domain: "<d> is an invalid domain identifier"; a spec that
 *       does not parse: "command line: config parsing error in disk
 *       specification: ..." (libxlu); a refusal by the host: libxl's error,
 *       then "libxl_device_disk_add failed.". Exit 1.
 *   block-detach [-f] <Domain> <DevId>
 *       unknown domain: "<d> is an invalid domain identifier (rc=-6)" (find_domain);
 *       no such device: "Error: Device <DevId> not connected."; a failed
 *       removal: "libxl_device_disk_remove failed.". Exit 1.
 *   block-list <Domain(s)>
 *       the header, then each domain's devices; an unknown domain is
 *       reported ("<d> is an invalid domain identifier") and skipped, and
 *       (unlike xl, which exits 0) the exit status is then 1.
 */
import { isAbsolute, resolve } from 'node:path';
import { parseDiskSpec, type DiskSpec } from '../toolstack/disk.ts';
import type { Ctx, XlCommand } from './cli-context.ts';
import { formatBlockListHeader, formatBlockListRow } from './format.ts';
import { has } from './getopt.ts';
import { ControlError } from './protocol.ts';

/** ERROR_INVAL, what libxl_domain_qualifier_to_domid returns for an unknown name. */
const ERROR_INVAL = -6;

/**
 * xlu_disk_parse over several command-line components: each is a part of
 * one spec. `target=` takes the rest of its own component only, so it is
 * put last before the components are joined.
 */
export function parseDiskComponents(parts: readonly string[], cwd: string): DiskSpec | string {
  const targets = parts.filter((p) => p.trimStart().startsWith('target='));
  if (targets.length > 1) return `command line: config parsing error in disk specification: target respecified in \`${parts.join(',')}'`;
  const joined = [...parts.filter((p) => !targets.includes(p)), ...targets].join(',');
  const spec = parseDiskSpec(joined);
  if (typeof spec === 'string') return `command line: config parsing error in disk specification: ${spec} in \`${joined}'`;
  // libxl opens the target from xl's directory; the host runs elsewhere.
  return spec.target !== '' && !isAbsolute(spec.target) ? { ...spec, target: resolve(cwd, spec.target) } : spec;
}

const fail = (ctx: Ctx, ...lines: string[]): number => {
  for (const l of lines) ctx.io.err(`${l}\n`);
  return 1;
};

const blockAttach: XlCommand = {
  name: 'block-attach',
  summary: 'Create a new virtual block device',
  usage: '<Domain> <disk-spec-component(s)>...',
  specs: [],
  minArgs: 2,
  async run(ctx, p) {
    const [domain, ...parts] = p.rest;
    const spec = parseDiskComponents(parts, ctx.io.cwd);
    if (typeof spec === 'string') return fail(ctx, spec);
    const c = await ctx.client();
    try {
      await c.call('block-attach', { domain, spec });
    } catch (e) {
      if (!(e instanceof ControlError)) throw e;
      if (e.code === 'ESRCH') return fail(ctx, `${domain} is an invalid domain identifier`);
      if (e.code === 'ENOTCONN' || e.code === 'ECONNRESET') throw e;
      return fail(ctx, `libxl: error: ${e.message}`, 'libxl_device_disk_add failed.');
    }
    return 0;
  },
};

const blockDetach: XlCommand = {
  name: 'block-detach',
  summary: 'Destroy a domain\'s virtual block device',
  usage: '[-f] <Domain> <DevId>',
  optionsHelp: '-f                      Force removal: do not wait for the backend to close the device.',
  specs: [{ short: 'f' }],
  minArgs: 2,
  async run(ctx, p) {
    const [domain, devid] = p.rest;
    const c = await ctx.client();
    try {
      await c.call('block-detach', { domain, devid, force: has(p, 'f') });
    } catch (e) {
      if (!(e instanceof ControlError)) throw e;
      if (e.code === 'ESRCH') return fail(ctx, `${domain} is an invalid domain identifier (rc=${ERROR_INVAL})`);
      if (e.code === 'ENOENT') return fail(ctx, `Error: Device ${devid} not connected.`);
      if (e.code === 'ENOTCONN' || e.code === 'ECONNRESET') throw e;
      return fail(ctx, `libxl: error: ${e.message}`, 'libxl_device_disk_remove failed.');
    }
    return 0;
  },
};

const blockList: XlCommand = {
  name: 'block-list',
  summary: 'List virtual block devices for a domain',
  usage: '<Domain(s)>',
  specs: [],
  minArgs: 1,
  async run(ctx, p) {
    const c = await ctx.client();
    ctx.io.out(formatBlockListHeader());
    let rc = 0;
    for (const domain of p.rest) {
      try {
        const r = await c.call('block-list', { domain });
        ctx.io.out(r.devices.map(formatBlockListRow).join(''));
      } catch (e) {
        if (!(e instanceof ControlError) || e.code !== 'ESRCH') throw e;
        ctx.io.err(`${domain} is an invalid domain identifier\n`);
        rc = 1;
      }
    }
    return rc;
  },
};

export const BLOCK_COMMANDS: readonly XlCommand[] = [blockAttach, blockDetach, blockList];
