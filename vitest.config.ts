import { defineConfig } from 'vitest/config';

// Test files run in parallel worker processes, each on its own PostgreSQL database
// (test/support/postgres.ts), so they cannot see each other's rows.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
