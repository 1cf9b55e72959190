import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"

// The fault matrix (`pnpm test:faults`): its own config, so `pnpm test`
// does not pick up its `*.fault.ts` files.
export default defineConfig({
  // The package, so vite keeps its caches in apps/bun/node_modules.
  root: fileURLToPath(new URL("../..", import.meta.url)),
  test: {
    name: "faults",
    include: ["test/faults/**/*.fault.ts"],
    // Two files at once: most of a row is waiting on a subprocess or a
    // retry delay, not on the CPU.
    maxWorkers: 2,
    minWorkers: 1,
    // Rows run the real Bun entry point as a subprocess, some many times.
    testTimeout: 240_000,
    hookTimeout: 60_000,
  },
})
