import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"

// The fault matrix (`pnpm test:faults`): its own config, so `pnpm test`
// does not pick up its `*.fault.ts` files.
export default defineConfig({
  test: {
    name: "faults",
    root: fileURLToPath(new URL(".", import.meta.url)),
    include: ["**/*.fault.ts"],
    // Rows run the real Bun entry point as a subprocess, some many times.
    testTimeout: 240_000,
    hookTimeout: 60_000,
  },
})
