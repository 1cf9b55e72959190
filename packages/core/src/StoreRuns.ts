import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Schema } from "effect"
import { decodeRows, storeFailure } from "./StoreSql.ts"

/** A stretch of time a machine spent started. */
export interface Run {
  readonly machineId: string
  readonly app: string
  readonly startedAt: number
  readonly stoppedAt: number | null
  readonly runawayAlerts: number
  readonly lastAlertAt: number | null
  readonly resolvedAt: number | null
  readonly autoStopAt: number | null
}

const RunRow = Schema.Struct({
  machine_id: Schema.String,
  app: Schema.String,
  started_at: Schema.Number,
  stopped_at: Schema.NullOr(Schema.Number),
  runaway_alerts: Schema.Number,
  last_alert_at: Schema.NullOr(Schema.Number),
  resolved_at: Schema.NullOr(Schema.Number),
  auto_stop_at: Schema.NullOr(Schema.Number),
})

export const toRun = (row: typeof RunRow.Type): Run => ({
  machineId: row.machine_id,
  app: row.app,
  startedAt: row.started_at,
  stoppedAt: row.stopped_at,
  runawayAlerts: row.runaway_alerts,
  lastAlertAt: row.last_alert_at,
  resolvedAt: row.resolved_at,
  autoStopAt: row.auto_stop_at,
})

/** The store's statements about runs, over the runtime's SqlClient. */
export const runStatements = (sql: SqlClient.SqlClient) => {
  const RUN_COLUMNS = sql.literal(
    "machine_id, app, started_at, stopped_at, runaway_alerts, " +
      "last_alert_at, resolved_at, auto_stop_at",
  )
  const readRuns = (operation: string) => (rows: ReadonlyArray<unknown>) =>
    Effect.map(decodeRows(RunRow, operation)(rows), (decoded) =>
      decoded.map(toRun),
    )

  const openRuns = Effect.fn("EventStore.openRuns")(function* () {
    return yield* sql`SELECT ${RUN_COLUMNS} FROM runs
      WHERE stopped_at IS NULL`.pipe(
      Effect.mapError(storeFailure("read runs")),
      Effect.flatMap(readRuns("read runs")),
    )
  })

  /** Runs that overlap `[from, now]`: still open, or stopped since. */
  const runsSince = Effect.fn("EventStore.runsSince")(function* (from: number) {
    return yield* sql`SELECT ${RUN_COLUMNS} FROM runs
      WHERE stopped_at IS NULL OR stopped_at >= ${from}`.pipe(
      Effect.mapError(storeFailure("read runs")),
      Effect.flatMap(readRuns("read runs")),
    )
  })

  /** Runs that were announced as runaway and have since stopped. */
  const unresolvedRunaways = Effect.fn("EventStore.unresolvedRunaways")(
    function* () {
      return yield* sql`SELECT ${RUN_COLUMNS} FROM runs
        WHERE runaway_alerts > 0 AND stopped_at IS NOT NULL
          AND resolved_at IS NULL`.pipe(
        Effect.mapError(storeFailure("read runs")),
        Effect.flatMap(readRuns("read runs")),
      )
    },
  )

  const openRun = Effect.fn("EventStore.openRun")(function* (
    machineId: string,
    app: string,
    startedAt: number,
  ) {
    yield* sql`INSERT INTO runs ${sql.insert({
      machine_id: machineId,
      app,
      started_at: startedAt,
    })} ON CONFLICT (machine_id, started_at) DO NOTHING`.pipe(
      Effect.mapError(storeFailure("open run")),
    )
  })

  /** Ends the machine's open run; its start, if there was one. */
  const closeRun = Effect.fn("EventStore.closeRun")(function* (
    machineId: string,
    stoppedAt: number,
  ) {
    const rows = yield* sql`UPDATE runs SET stopped_at = ${stoppedAt}
      WHERE machine_id = ${machineId} AND stopped_at IS NULL
      RETURNING started_at`.pipe(Effect.mapError(storeFailure("close run")))
    const startedAt = rows[0]?.started_at
    return typeof startedAt === "number" ? startedAt : undefined
  })

  const updateRun = Effect.fn("EventStore.updateRun")(function* (
    run: Pick<Run, "machineId" | "startedAt">,
    fields: Partial<
      Pick<Run, "runawayAlerts" | "lastAlertAt" | "resolvedAt" | "autoStopAt">
    >,
  ) {
    const columns = {
      ...(fields.runawayAlerts === undefined
        ? {}
        : { runaway_alerts: fields.runawayAlerts }),
      ...(fields.lastAlertAt === undefined
        ? {}
        : { last_alert_at: fields.lastAlertAt }),
      ...(fields.resolvedAt === undefined
        ? {}
        : { resolved_at: fields.resolvedAt }),
      ...(fields.autoStopAt === undefined
        ? {}
        : { auto_stop_at: fields.autoStopAt }),
    }
    if (Object.keys(columns).length === 0) return
    yield* sql`UPDATE runs SET ${sql.update(columns)}
      WHERE machine_id = ${run.machineId}
        AND started_at = ${run.startedAt}`.pipe(
      Effect.mapError(storeFailure("update run")),
    )
  })

  return {
    openRuns,
    runsSince,
    unresolvedRunaways,
    openRun,
    closeRun,
    updateRun,
  } as const
}
