/**
 * Wait for a condition on a running host (polled: the host's threads change
 * shared state and the console without telling the test). Throws, naming what
 * was awaited, when `ms` pass first.
 */
export async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 30_000, pollMs = 10): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}
