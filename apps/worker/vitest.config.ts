import path from "node:path"
import {
  defineWorkersProject,
  readD1Migrations,
  type WorkerPoolOptionsContext,
} from "@cloudflare/vitest-pool-workers/config"

export default defineWorkersProject(async () => {
  // The same folder wrangler applies to D1 and the Bun runner to SQLite.
  const migrations = await readD1Migrations(
    path.join(import.meta.dirname, "../../packages/core/migrations"),
  )
  return {
    test: {
      name: "worker",
      include: ["test/**/*.test.ts"],
      globalSetup: ["./test/node/fakes.ts"],
      setupFiles: ["./test/apply-migrations.ts"],
      poolOptions: {
        workers: ({ inject }: WorkerPoolOptionsContext) => ({
          singleWorker: true,
          wrangler: { configPath: "./wrangler.jsonc" },
          miniflare: {
            bindings: {
              TEST_MIGRATIONS: migrations,
              CONTROL_URL: inject("controlUrl"),
            },
          },
        }),
      },
    },
  }
})
