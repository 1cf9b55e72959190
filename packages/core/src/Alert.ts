import { Metric } from "effect"
import type { Embed } from "./DiscordMessage.ts"
import * as Metrics from "./Metrics.ts"
import type { DiscordRoute } from "./Routes.ts"

/** How long a pass owns the alerts it is delivering. */
export const CLAIM_MS = 15 * 60 * 1000

/**
 * One embed as delivery sees it, whatever its table: one alert, or several
 * events of one machine sharing an embed.
 */
export interface Alert {
  readonly keys: ReadonlyArray<string>
  readonly embed: Embed
  /** When it happened: the Fly event's time, or the notice's creation. */
  readonly at: number
  readonly route: DiscordRoute
}

export const keysOf = (alerts: ReadonlyArray<Alert>) =>
  alerts.flatMap((alert) => alert.keys)

export const countFailed = (reason: string, alerts: number) =>
  Metric.incrementBy(
    Metric.tagged(Metrics.alertsFailed, "reason", reason),
    alerts,
  )
