#!/usr/bin/env node
// `xl` and the xenstore-* tools (package.json "bin"): make TypeScript
// importable in this process, as hypervisor/platform/boot-worker.mjs does for
// threads, then run the command line. The name we are run under picks the tool.
import { basename } from 'node:path';
import { register } from 'tsx/esm/api';

register();
const { main } = await import('./cli.ts');
const code = await main(process.argv.slice(2), { argv0: basename(process.argv[1] ?? 'xl') });
// Let stdout drain (it may be a pipe), then exit even if a handle lingers.
process.stdout.write('', () => process.exit(code));
