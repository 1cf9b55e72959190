import { FetchHttpClient } from "@effect/platform"
import * as SqlClient from "@effect/sql/SqlClient"
import { EventStore } from "@flymon/core/EventStore"
import { FlyEvents } from "@flymon/core/FlyEvents"
import { runPass, type PassSummary } from "@flymon/core/Monitor"
import { Notifier } from "@flymon/core/Notifier"
import { RetryPolicy, type RetryPolicyShape } from "@flymon/core/RetryPolicy"
import {
  Duration,
  Effect,
  Layer,
  Logger,
  LogLevel,
  ManagedRuntime,
  Schedule,
} from "effect"
import { createInterface } from "node:readline"
import { layerDatabase } from "../src/Database.ts"

// The monitor side of the benchmark, alone in its process so its CPU time
// and RSS are not mixed with the fake servers'. It reads one command a line
// on stdin ("pass", "exit") and answers one JSON line on stdout.

/** Fails fast: the benchmark measures a pass, not the patience of one. */
const quickRetry: RetryPolicyShape = {
  fly: Schedule.spaced("5 millis").pipe(Schedule.intersect(Schedule.recurs(2))),
  discord: Schedule.spaced("5 millis").pipe(
    Schedule.intersect(Schedule.recurs(2)),
  ),
  longestRateLimitWait: Duration.seconds(1),
  requestTimeout: Duration.seconds(60),
}

export interface PassMeasurement {
  readonly summary: PassSummary
  readonly wallMs: number
  readonly cpuMs: number
  /** `total_changes()` of the one SQLite connection, across the pass. */
  readonly rowsWritten: number
  readonly eventRows: number
  /** Highest RSS sampled every 5 ms during the pass. */
  readonly peakRssMb: number
}

export interface ExitMeasurement {
  /** The kernel's high-water mark for the whole process. */
  readonly maxRssMb: number
}

const databasePath = process.env.BENCH_DATABASE_PATH ?? ":memory:"

const runtime = ManagedRuntime.make(
  Layer.mergeAll(FlyEvents.Default, EventStore.Default, Notifier.Default).pipe(
    Layer.provideMerge(
      Layer.mergeAll(
        FetchHttpClient.layer,
        RetryPolicy.layer(quickRetry),
        layerDatabase(databasePath),
      ),
    ),
    Layer.provide(Logger.minimumLogLevel(LogLevel.None)),
  ),
)

const counts = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const [changes] = yield* sql<{ n: number }>`SELECT total_changes() AS n`
  const [events] = yield* sql<{ n: number }>`SELECT count(*) AS n FROM events`
  return { changes: changes!.n, events: events!.n }
})

const measure = Effect.gen(function* () {
  const before = yield* counts
  let peak = process.memoryUsage().rss
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss)
  }, 5)
  const cpu = process.cpuUsage()
  const started = performance.now()
  const summary = yield* runPass.pipe(
    Effect.ensuring(Effect.sync(() => clearInterval(sampler))),
  )
  const wallMs = performance.now() - started
  const used = process.cpuUsage(cpu)
  peak = Math.max(peak, process.memoryUsage().rss)
  const after = yield* counts
  const measurement: PassMeasurement = {
    summary,
    wallMs,
    cpuMs: (used.user + used.system) / 1000,
    rowsWritten: after.changes - before.changes,
    eventRows: after.events,
    peakRssMb: peak / 2 ** 20,
  }
  return measurement
})

const reply = (value: unknown) =>
  new Promise<void>((resolve) =>
    process.stdout.write(JSON.stringify(value) + "\n", () => resolve()),
  )

const lines = createInterface({ input: process.stdin })
for await (const line of lines) {
  if (line === "pass") {
    const result = await runtime.runPromiseExit(measure)
    await reply(
      result._tag === "Success"
        ? { ok: true, value: result.value }
        : { ok: false, error: String(result.cause) },
    )
  } else if (line === "exit") {
    await runtime.dispose()
    const exit: ExitMeasurement = {
      maxRssMb: process.resourceUsage().maxRSS / 1024,
    }
    await reply({ ok: true, value: exit })
    process.exit(0)
  }
}
