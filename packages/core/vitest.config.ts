import { defineProject } from "vitest/config"

export default defineProject({
  test: {
    name: "core",
    include: ["test/**/*.test.ts"],
    // Tests drive real HTTP servers and SQLite; a busy CI machine is slow.
    testTimeout: 30_000,
  },
})
