/** The real `xl` CLI (node dom0/xl/bin.mjs) in a child process, for integration tests against a running host. */
import { execFile } from 'node:child_process';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '../..');

export interface XlRun { readonly code: number; readonly stdout: string; readonly stderr: string }

/** Run `xl args...` from the project root with this process's environment (asynchronously: the platform runs on the caller's thread). */
export function xl(...args: string[]): Promise<XlRun> {
  return new Promise((done) => {
    execFile(process.execPath, [join(ROOT, 'dom0/xl/bin.mjs'), ...args], { cwd: ROOT, env: process.env, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      done({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}
