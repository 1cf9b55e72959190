import * as SqlClient from "@effect/sql/SqlClient"
import { readRows, writeRows } from "./StoreSql.ts"
import { Effect, Schema } from "effect"
import type { Silence, SilenceTarget } from "./Silences.ts"

// The SQL of silences (migration 0006), over the runtime's SqlClient: the
// pass and the Bun CLI share it.

/** What a silenced event is folded into: `silence:<id>`. */
export const FOLD_PREFIX = "silence:"
/** How a silenced notice is settled: `silenced (silence:<id>)`. */
export const SILENCED_NOTICE = "silenced ("
/** The kind of the note queued when a silence ends. */
export const NOTICE_KIND = "silence"

const SilenceRow = Schema.Struct({
  id: Schema.String,
  source: Schema.Literal("config", "cli"),
  app: Schema.NullOr(Schema.String),
  machine_id: Schema.NullOr(Schema.String),
  ends_at: Schema.Number,
  reason: Schema.NullOr(Schema.String),
  created_at: Schema.Number,
  removed_at: Schema.NullOr(Schema.Number),
  ended_at: Schema.NullOr(Schema.Number),
})
export type SilenceRow = typeof SilenceRow.Type

const CountRow = Schema.Struct({
  silence_id: Schema.String,
  type: Schema.String,
  n: Schema.Number,
})
export const EventRow = Schema.Struct({
  key: Schema.String,
  machine_id: Schema.String,
  app: Schema.String,
  type: Schema.String,
  timestamp: Schema.Number,
})
export const NoticeRow = Schema.Struct({
  key: Schema.String,
  kind: Schema.String,
  app: Schema.String,
  created_at: Schema.Number,
})
const AppCountRow = Schema.Struct({ app: Schema.String, n: Schema.Number })
const IdRow = Schema.Struct({ id: Schema.String })

/** The row a SILENCES entry is stored as, when first seen at `now`. */
export const configRow = (silence: Silence, now: number): SilenceRow => ({
  id: silence.id,
  source: "config",
  app: silence.target._tag === "App" ? silence.target.glob : null,
  machine_id: silence.target._tag === "Machine" ? silence.target.id : null,
  ends_at: silence.until,
  reason: silence.reason ?? null,
  created_at: now,
  removed_at: null,
  ended_at: null,
})

export const toSilence = (row: SilenceRow): Silence => ({
  id: row.id,
  source: row.source,
  target:
    row.app === null
      ? { _tag: "Machine", id: row.machine_id ?? "" }
      : { _tag: "App", glob: row.app },
  until: row.ends_at,
  reason: row.reason ?? undefined,
})

/** The SQL of silences, over the runtime's SqlClient. */
export const silenceTable = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const COLUMNS = sql.literal(
    "id, source, app, machine_id, ends_at, reason, created_at, removed_at, ended_at",
  )
  const read = readRows
  const write = writeRows

  /** Every silence ever stored, removed ones included. */
  const rows = read(
    SilenceRow,
    "read silences",
  )(sql`SELECT ${COLUMNS} FROM silences ORDER BY created_at, id`)

  /** Events silenced so far, by silence and event type (or notice kind). */
  const counts = Effect.map(
    read(
      CountRow,
      "read silence counts",
    )(sql`SELECT silence_id, type, n FROM silence_counts ORDER BY type`),
    (all) => {
      const bySilence = new Map<string, Map<string, number>>()
      for (const row of all) {
        const types = bySilence.get(row.silence_id) ?? new Map()
        types.set(row.type, row.n)
        bySilence.set(row.silence_id, types)
      }
      return bySilence as ReadonlyMap<string, ReadonlyMap<string, number>>
    },
  )

  const insertConfig = (silence: Silence, now: number) => {
    const { removed_at: _, ended_at: __, ...row } = configRow(silence, now)
    return write("store a silence")(
      sql`INSERT INTO silences ${sql.insert(row)} ON CONFLICT (id) DO NOTHING`,
    )
  }

  /** A config silence as SILENCES now has it; reopened: counted afresh. */
  const updateConfig = (silence: Silence, reopened: boolean) =>
    Effect.all([
      write("update a silence")(
        sql`UPDATE silences SET ends_at = ${silence.until},
          reason = ${silence.reason ?? null}, removed_at = NULL
          ${sql.literal(reopened ? ", ended_at = NULL" : "")}
          WHERE id = ${silence.id}`,
      ),
      reopened
        ? write("reset silence counts")(
            sql`DELETE FROM silence_counts WHERE silence_id = ${silence.id}`,
          )
        : Effect.void,
    ])

  /** A silence made with the CLI; its id is the next number. */
  const insertCli = (
    target: SilenceTarget,
    until: number,
    reason: string | undefined,
    now: number,
  ) =>
    read(
      IdRow,
      "add a silence",
    )(
      sql`INSERT INTO silences
          (id, source, app, machine_id, ends_at, reason, created_at)
        SELECT CAST(COALESCE(MAX(CAST(id AS INTEGER)), 0) + 1 AS TEXT), 'cli',
          ${target._tag === "App" ? target.glob : null},
          ${target._tag === "Machine" ? target.id : null},
          ${until}, ${reason ?? null}, ${now}
        FROM silences WHERE source = 'cli'
        RETURNING id`,
    ).pipe(Effect.map((ids) => ids[0]!.id))

  /** Marks a silence removed; false if it was not there to remove. */
  const remove = (id: string, now: number, source: "config" | "cli") =>
    read(
      IdRow,
      "remove a silence",
    )(
      sql`UPDATE silences SET removed_at = ${now}
        WHERE id = ${id} AND source = ${source} AND removed_at IS NULL
        RETURNING id`,
    ).pipe(Effect.map((ids) => ids.length > 0))

  const markEnded = (id: string, now: number) =>
    write("end a silence")(
      sql`UPDATE silences SET ended_at = ${now}
        WHERE id = ${id} AND ended_at IS NULL`,
    )

  const addCounts = (id: string, byType: ReadonlyMap<string, number>) =>
    Effect.forEach(
      byType,
      ([type, n]) =>
        write("count silenced alerts")(
          sql`INSERT INTO silence_counts ${sql.insert({
            silence_id: id,
            type,
            n,
          })} ON CONFLICT (silence_id, type)
            DO UPDATE SET n = silence_counts.n + excluded.n`,
        ),
      { discard: true },
    )

  /** Undelivered events no pass is delivering right now. */
  const waitingEvents = (now: number) =>
    read(
      EventRow,
      "read waiting events",
    )(sql`SELECT key, machine_id, app, type, timestamp FROM events
      WHERE notified_at IS NULL
        AND (claimed_until IS NULL OR claimed_until < ${now})
      ORDER BY timestamp, key LIMIT 5000`)

  /** Undelivered notices about an app, other than silences' own notes. */
  const waitingNotices = (now: number) =>
    read(
      NoticeRow,
      "read waiting notices",
    )(sql`SELECT key, kind, app, created_at FROM notices
      WHERE notified_at IS NULL AND app IS NOT NULL
        AND kind <> ${NOTICE_KIND}
        AND (claimed_until IS NULL OR claimed_until < ${now})
      ORDER BY created_at, key LIMIT 1000`)

  /** Alerts settled by a silence within `[from, to)`, per app. */
  const silencedByApp = (from: number, to: number) =>
    read(
      AppCountRow,
      "count silenced alerts",
    )(
      sql`SELECT app, COUNT(*) AS n FROM (
          SELECT app FROM events
          WHERE folded_into LIKE ${`${FOLD_PREFIX}%`}
            AND notified_at >= ${from} AND notified_at < ${to}
          UNION ALL
          SELECT app FROM notices
          WHERE app IS NOT NULL
            AND delivery_error LIKE ${`${SILENCED_NOTICE}${FOLD_PREFIX}%`}
            AND notified_at >= ${from} AND notified_at < ${to})
        GROUP BY app ORDER BY app`,
    )

  return {
    rows,
    counts,
    insertConfig,
    updateConfig,
    insertCli,
    remove,
    markEnded,
    addCounts,
    waitingEvents,
    waitingNotices,
    silencedByApp,
  } as const
})
