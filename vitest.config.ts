import { defineConfig } from "vitest/config"

// bun:sqlite only loads under Bun, and the workers pool only under Node, so
// one root config lists the projects that fit the runtime running it.
const isBun = typeof process.versions.bun === "string"

export default defineConfig({
  test: {
    projects: isBun
      ? ["packages/core", "packages/testkit", "apps/bun"]
      : ["apps/worker"],
  },
})
