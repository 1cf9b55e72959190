import { ConfigProvider, Layer } from "effect"

/**
 * The Worker's bindings. Variables are optional here because a missing
 * secret is a configuration error to report, not a crash.
 */
export interface Env {
  readonly DB: D1Database
  readonly FLY_API_TOKEN?: string
  readonly FLY_ORG_SLUG?: string
  /** Several orgs, instead of the two above: a JSON secret, slug → token. */
  readonly FLY_ORGS?: string
  readonly FLY_API_BASE_URL?: string
  readonly DISCORD_WEBHOOK_URL?: string
  /** Some apps or orgs to other webhooks: a JSON secret. */
  readonly DISCORD_ROUTES?: string
  readonly MONITORED_EVENTS?: string
  readonly LOG_LEVEL?: string
  /** Bearer token for GET /status; the endpoint is off without it. */
  readonly STATUS_TOKEN?: string
  readonly MAX_RUNTIME?: string
  readonly MAX_RUNTIME_BY_APP?: string
  readonly REMIND_EVERY?: string
  readonly MONTHLY_BUDGET_USD?: string
  readonly PRICES?: string
  readonly DIGEST_HOUR?: string
  readonly DIGEST_TIMEZONE?: string
  readonly AUTO_STOP?: string
  readonly AUTO_STOP_AFTER?: string
  readonly EVENTS_RETENTION?: string
  readonly MAX_EVENTS?: string
  readonly FAILURE_ALERT_AFTER?: string
  readonly FAILURE_REMIND_EVERY?: string
  readonly MAX_ALERT_AGE?: string
  readonly STORM_EVENTS?: string
  readonly STORM_WINDOW?: string
  readonly STORM_UPDATE_EVERY?: string
  readonly APP_ALERT_LIMIT?: string
  readonly APP_ALERT_WINDOW?: string
  readonly SILENCES?: string
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
