import { EventStore } from "@flymon/core/EventStore"
import * as Metrics from "@flymon/core/Metrics"
import { render } from "@flymon/core/Prometheus"
import { Effect, Metric, Option, Schema } from "effect"
import { authorized } from "./Status.ts"
import { LAST_PASS_KEY, LastPassJson } from "./LastPass.ts"

// A Worker isolate lives for a few invocations at most, so counters kept in
// memory would say little. /metrics serves gauges read from D1 instead: the
// last pass's outcome and counts, and the rows per table.

const gauge = (name: string, description: string) =>
  Metric.gauge(name, { description })

const lastPassOk = gauge(
  "flymon_last_pass_ok",
  "1 when the last pass succeeded.",
)
const lastPassAt = gauge(
  "flymon_last_pass_timestamp_seconds",
  "When the last pass finished (Unix seconds).",
)
const lastPassCount = gauge(
  "flymon_last_pass_count",
  "Counts of the last pass, by what was counted.",
)
// The same gauge the core sets after each pass, so one name, one series.
const storeRows = Metrics.storeRows

const NAMES = new Set([
  "flymon_last_pass_ok",
  "flymon_last_pass_timestamp_seconds",
  "flymon_last_pass_count",
  "flymon_store_rows",
])

const metricsText = Effect.gen(function* () {
  const store = yield* EventStore
  const raw = yield* store.getMeta(LAST_PASS_KEY)
  const last = Option.getOrUndefined(
    raw === undefined ? Option.none() : Schema.decodeOption(LastPassJson)(raw),
  )
  if (last !== undefined) {
    yield* Metric.set(lastPassOk, last.ok ? 1 : 0)
    yield* Metric.set(lastPassAt, Date.parse(last.finishedAt) / 1000)
    for (const [what, value] of Object.entries(last.counts ?? {}))
      if (typeof value === "number")
        yield* Metric.set(Metric.tagged(lastPassCount, "count", what), value)
  }
  for (const [table, count] of Object.entries(yield* store.rowCounts()))
    yield* Metric.set(Metric.tagged(storeRows, "table", table), count)
  const pairs = yield* Metric.snapshot
  return render(pairs.filter((pair) => NAMES.has(pair.metricKey.name)))
})

/** `GET /metrics`, Prometheus text, for holders of STATUS_TOKEN only. */
export const metricsResponse = (request: Request, token: string | undefined) =>
  Effect.gen(function* () {
    if (token === undefined || token === "")
      return new Response("not found", { status: 404 })
    if (!(yield* authorized(request, token)))
      return Response.json(
        { error: "send Authorization: Bearer <STATUS_TOKEN>" },
        { status: 401 },
      )
    return new Response(yield* metricsText, {
      headers: {
        "content-type": "text/plain; version=0.0.4; charset=utf-8",
        "cache-control": "no-store",
      },
    })
  }).pipe(
    Effect.catchAll((error) =>
      Effect.logError("/metrics could not be computed").pipe(
        Effect.annotateLogs("error", error.message),
        Effect.as(
          Response.json(
            { error: "could not compute metrics" },
            { status: 500 },
          ),
        ),
      ),
    ),
  )
