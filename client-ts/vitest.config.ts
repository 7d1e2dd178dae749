import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'test/**/*.test.tsx'],
    environment: 'node',
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // End-to-end files each start their own server process; keep the 2-core
    // machine calm by running files one at a time.
    fileParallelism: false,
    reporters: ['default', './test/helpers/summary-reporter.ts'],
  },
})
