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
import { Database } from "bun:sqlite"
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
  readonly rowsWritten: number | null
  readonly eventRows: number
  /** The process's RSS high-water mark at the end of the pass. */
  readonly peakRssMb: number
  /**
   * CPU time inside database calls, part of `cpuMs`; null unless
   * BENCH_SQL_CPU=1, as timing every statement costs CPU of its own.
   */
  readonly sqlCpuMs: number | null
}

export interface ExitMeasurement {
  /** The kernel's high-water mark for the whole process. */
  readonly maxRssMb: number
}

const databasePath = process.env.BENCH_DATABASE_PATH ?? ":memory:"

// bun:sqlite is synchronous, so the CPU time of each statement is exactly
// what process.cpuUsage() moves by across the call. Its statements carry
// their methods as own properties, so each is wrapped as `query` makes it.
let sqlCpuMs = 0
const wrapped = new WeakSet<object>()
const timedStatement = <S extends object>(statement: S): S => {
  if (wrapped.has(statement)) return statement
  wrapped.add(statement)
  const methods = statement as Record<string, unknown>
  for (const name of ["all", "values", "run", "get"]) {
    const original = methods[name] as (...args: Array<unknown>) => unknown
    methods[name] = (...args: Array<unknown>) => {
      const before = process.cpuUsage()
      try {
        return original.apply(statement, args)
      } finally {
        const used = process.cpuUsage(before)
        sqlCpuMs += (used.user + used.system) / 1000
      }
    }
  }
  return statement
}
const timeSql = process.env.BENCH_SQL_CPU === "1"
if (timeSql) {
  const query = Database.prototype.query
  Database.prototype.query = function (this: Database, sql: string) {
    return timedStatement(query.call(this, sql))
  } as typeof query
}

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
  const cpu = process.cpuUsage()
  const sqlBefore = sqlCpuMs
  const started = performance.now()
  const summary = yield* runPass
  const wallMs = performance.now() - started
  const used = process.cpuUsage(cpu)
  const after = yield* counts
  const measurement: PassMeasurement = {
    summary,
    wallMs,
    cpuMs: (used.user + used.system) / 1000,
    rowsWritten: after.changes - before.changes,
    eventRows: after.events,
    peakRssMb: process.resourceUsage().maxRSS / 1024,
    sqlCpuMs: timeSql ? sqlCpuMs - sqlBefore : null,
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
