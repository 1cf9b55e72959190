import { ConfigProvider, Layer } from "effect"

/**
 * The Worker's bindings. Variables are optional here because a missing
 * secret is a configuration error to report, not a crash.
 */
export interface Env {
  readonly DB: D1Database
  readonly FLY_API_TOKEN?: string
  readonly FLY_ORG_SLUG?: string
  readonly FLY_API_BASE_URL?: string
  readonly DISCORD_WEBHOOK_URL?: string
  readonly MONITORED_EVENTS?: string
  readonly LOG_LEVEL?: string
}

/** Effect `Config` reads the Worker's string variables and secrets. */
export const layerConfig = (env: Env) =>
  Layer.setConfigProvider(
    ConfigProvider.fromMap(
      new Map(
        Object.entries(env).filter(
          (entry): entry is [string, string] => typeof entry[1] === "string",
        ),
      ),
    ),
  )
