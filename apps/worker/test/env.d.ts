import type { Env } from "../src/Env.ts"

declare module "cloudflare:test" {
  interface ProvidedEnv extends Env {
    readonly TEST_MIGRATIONS: D1Migration[]
    readonly CONTROL_URL: string
  }
}
