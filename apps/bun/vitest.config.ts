import { defineProject } from "vitest/config"

export default defineProject({
  test: {
    name: "bun",
    include: ["test/**/*.test.ts"],
    // Each test runs the real entry point as a subprocess several times.
    testTimeout: 60_000,
  },
})
