import * as SqlClient from "@effect/sql/SqlClient"
import { readRows, writeRows } from "./StoreSql.ts"
import { Effect, Schema } from "effect"
import { FOLD_PREFIX as SILENCE_FOLD } from "./SilenceTable.ts"

// The SQL of restart storms (migration 0007), over the runtime's SqlClient:
// the `storms` table, and the start/exit events a storm is made of.

/** Exits whose codes an alert lists, newest last. */
const LISTED_EXITS = 5

const StormRow = Schema.Struct({
  key: Schema.String,
  machine_id: Schema.String,
  app: Schema.String,
  org: Schema.NullOr(Schema.String),
  started_at: Schema.Number,
  detected_at: Schema.Number,
  announced: Schema.Number,
  reported: Schema.Number,
  updates: Schema.Number,
  last_notice_at: Schema.NullOr(Schema.Number),
  /** Fly time of the storm's latest start/exit so far. */
  last_event_at: Schema.Number,
})
export type StormRow = typeof StormRow.Type

const WaitingRow = Schema.Struct({
  machine_id: Schema.String,
  app: Schema.String,
  org: Schema.NullOr(Schema.String),
  first: Schema.Number,
})

const TimeRow = Schema.Struct({ timestamp: Schema.Number })

const StatsRow = Schema.Struct({
  events: Schema.Number,
  last: Schema.NullOr(Schema.Number),
  exits: Schema.NullOr(Schema.Number),
  ooms: Schema.NullOr(Schema.Number),
})

const ExitRow = Schema.Struct({
  exit_code: Schema.NullOr(Schema.Number),
  oom_killed: Schema.NullOr(Schema.Number),
})

const KeyRow = Schema.Struct({ key: Schema.String })

/** What the store holds of one storm's start/exit events. */
export interface StormStats {
  readonly events: number
  /** Fly time of the newest one. */
  readonly last: number
  readonly exits: number
  readonly ooms: number
  /** The latest exits, oldest first. */
  readonly codes: ReadonlyArray<typeof ExitRow.Type>
}

/** The SQL of storms, over the runtime's SqlClient. */
export const stormTable = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const read = readRows
  const write = writeRows
  // A silenced machine's events are muted: they make no storm either.
  const notSilenced = sql`(folded_into IS NULL
    OR folded_into NOT LIKE ${`${SILENCE_FOLD}%`})`

  /** Machines with undelivered start/exit events, and the oldest one. */
  const waitingMachines = read(
    WaitingRow,
    "find undelivered events",
  )(sql`SELECT machine_id, MAX(app) AS app, MAX(org) AS org,
      MIN(timestamp) AS first
    FROM events
    WHERE notified_at IS NULL AND type IN ('start', 'exit') AND baseline = 0
    GROUP BY machine_id`)

  /** Fly times of the machine's start/exit events after `after`. */
  const timesAfter = (machineId: string, after: number) =>
    Effect.map(
      read(
        TimeRow,
        "read start and exit times",
      )(sql`SELECT timestamp FROM events
        WHERE machine_id = ${machineId} AND timestamp > ${after}
          AND type IN ('start', 'exit') AND baseline = 0 AND ${notSilenced}
        ORDER BY timestamp`),
      (rows) => rows.map((row) => row.timestamp),
    )

  const open = read(
    StormRow,
    "read storms",
  )(sql`SELECT key, machine_id, app, org, started_at, detected_at,
      announced, reported, updates, last_notice_at, last_event_at
    FROM storms WHERE ended_at IS NULL
    ORDER BY started_at, key`)

  /** The storm's start/exit events from its first up to `until`. */
  const stats = (storm: StormRow, until: number) =>
    Effect.gen(function* () {
      const [row] = yield* read(
        StatsRow,
        "count storm events",
      )(sql`SELECT COUNT(*) AS events, MAX(timestamp) AS last,
          SUM(CASE WHEN type = 'exit' THEN 1 ELSE 0 END) AS exits,
          SUM(CASE WHEN type = 'exit' AND oom_killed = 1 THEN 1 ELSE 0 END)
            AS ooms
        FROM events
        WHERE machine_id = ${storm.machine_id}
          AND timestamp >= ${storm.started_at} AND timestamp <= ${until}
          AND type IN ('start', 'exit') AND baseline = 0
          AND ${notSilenced}`)
      const codes = yield* read(
        ExitRow,
        "read storm exits",
      )(sql`SELECT exit_code, oom_killed FROM events
        WHERE machine_id = ${storm.machine_id}
          AND timestamp >= ${storm.started_at} AND timestamp <= ${until}
          AND type = 'exit' AND baseline = 0 AND ${notSilenced}
        ORDER BY timestamp DESC, key DESC
        LIMIT ${LISTED_EXITS}`)
      return {
        events: row?.events ?? 0,
        // Only if retention removed them all: the storm is then long over.
        last: row?.last ?? until,
        exits: row?.exits ?? 0,
        ooms: row?.ooms ?? 0,
        codes: [...codes].reverse(),
      } satisfies StormStats
    })

  /** The machine's undelivered start/stop/exit events, up to `until`. */
  const waiting = (machineId: string, until: number | undefined) =>
    Effect.map(
      read(
        KeyRow,
        "read storm events",
      )(sql`SELECT key FROM events
        WHERE machine_id = ${machineId} AND notified_at IS NULL
          AND type IN ('start', 'stop', 'exit')
          ${until === undefined ? sql.literal("") : sql`AND timestamp <= ${until}`}
        ORDER BY timestamp, key`),
      (rows) => rows.map((row) => row.key),
    )

  // At most one open storm per machine (storms_open), whoever inserts.
  const insert = (storm: {
    readonly key: string
    readonly machineId: string
    readonly app: string
    readonly org: string | null
    readonly startedAt: number
    readonly now: number
  }) =>
    write("open storm")(
      sql`INSERT INTO storms ${sql.insert({
        key: storm.key,
        machine_id: storm.machineId,
        app: storm.app,
        org: storm.org,
        started_at: storm.startedAt,
        detected_at: storm.now,
        last_event_at: storm.startedAt,
      })} ON CONFLICT DO NOTHING`,
    )

  const announced = (key: string, reported: number, now: number) =>
    write("announce storm")(
      sql`UPDATE storms SET announced = 1, reported = ${reported},
          last_notice_at = ${now}
        WHERE key = ${key} AND announced = 0`,
    )

  const updated = (storm: StormRow, reported: number, now: number) =>
    write("update storm")(
      sql`UPDATE storms SET updates = ${storm.updates + 1},
          reported = ${reported}, last_notice_at = ${now}
        WHERE key = ${storm.key} AND updates = ${storm.updates}`,
    )

  /** Moves the storm's latest event on; an older one never wins. */
  const extended = (key: string, lastEventAt: number) =>
    write("extend storm")(
      sql`UPDATE storms SET last_event_at = ${lastEventAt}
        WHERE key = ${key} AND last_event_at < ${lastEventAt}`,
    )

  const ended = (key: string, now: number) =>
    write("end storm")(
      sql`UPDATE storms SET ended_at = ${now}
        WHERE key = ${key} AND ended_at IS NULL`,
    )

  /** Storms outlive their events by no more than the events' retention. */
  const removeEndedBefore = (before: number) =>
    write("remove old storms")(
      sql`DELETE FROM storms
        WHERE ended_at IS NOT NULL AND ended_at < ${before}`,
    )

  return {
    waitingMachines,
    timesAfter,
    open,
    stats,
    waiting,
    insert,
    announced,
    updated,
    extended,
    ended,
    removeEndedBefore,
  } as const
})
