import { Effect, Metric, MetricBoundaries } from "effect"

// What the monitor counts about itself. Prometheus names and units; the Bun
// runner serves them at /metrics (see Prometheus.ts for the text format).

export const passes = Metric.counter("flymon_passes_total", {
  description: "Poll passes run.",
  incremental: true,
})

export const passFailures = Metric.counter("flymon_pass_failures_total", {
  description: "Poll passes that failed, by reason.",
  incremental: true,
})

export const passDuration = Metric.histogram(
  "flymon_pass_duration_seconds",
  MetricBoundaries.exponential({ start: 0.05, factor: 2, count: 10 }),
  "Wall time of a poll pass.",
)

export const flyRequests = Metric.counter("flymon_fly_requests_total", {
  description: "Requests sent to the Fly Machines API, by HTTP status.",
  incremental: true,
})

export const eventsSeen = Metric.counter("flymon_events_seen_total", {
  description: "New billing-relevant Fly events stored.",
  incremental: true,
})

export const alertsSent = Metric.counter("flymon_alerts_sent_total", {
  description: "Alerts Discord accepted.",
  incremental: true,
})

export const alertsFailed = Metric.counter("flymon_alerts_failed_total", {
  description:
    "Alerts Discord did not accept, by reason: kept for later, or given up " +
    "(Rejected) or summed up (Expired).",
  incremental: true,
})

export const discordRateLimited = Metric.counter(
  "flymon_discord_rate_limited_total",
  { description: "429 answers from Discord.", incremental: true },
)

export const storeRows = Metric.gauge("flymon_store_rows", {
  description: "Rows in the monitor's database, by table.",
})

export const lastSuccess = Metric.gauge(
  "flymon_last_success_timestamp_seconds",
  { description: "When the last poll pass succeeded (Unix seconds)." },
)

/** Counters exist from the start, at zero, so a scrape shows every one. */
export const initialize = Effect.all(
  [passes, eventsSeen, alertsSent, discordRateLimited].map((counter) =>
    Metric.incrementBy(counter, 0),
  ),
  { discard: true },
)
