import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/bench/**'],
    setupFiles: ['test/setup-env.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: 'forks',
    // Real-thread tests measure shares and latencies: run files one at a time so
    // that one host booted by a test does not starve another of the two cores.
    fileParallelism: false,
    env: { XENTS_LOG: 'warn' },
  },
});
