import * as SqlClient from "@effect/sql/SqlClient"
import { Chunk, Effect, Schema } from "effect"
import type { ExitDetails, Guest } from "./Domain.ts"
import {
  decodeRows,
  IN_CHUNK,
  StoreError,
  storeFailure,
  updateInChunks,
} from "./StoreSql.ts"
import { noticeStatements } from "./StoreNotices.ts"
import { runStatements } from "./StoreRuns.ts"

export { StoreError }
export type { Notice } from "./StoreNotices.ts"
export type { Run } from "./StoreRuns.ts"

/** What the store remembers of a machine between passes. */
export interface MachineRecord {
  readonly id: string
  readonly app: string
  readonly name: string
  readonly region: string
  readonly size: string
  readonly state: string
  readonly lastEventKey: string | null
  readonly lastEventAt: number | null
  readonly guest: Guest | undefined
  /** The Fly organization of its app; undefined in rows from before orgs. */
  readonly org?: string | undefined
}

/** A billing-relevant event as the monitor first sees it. */
export interface NewEvent {
  readonly key: string
  readonly machineId: string
  readonly app: string
  readonly type: string
  readonly status: string
  readonly source: string
  readonly timestamp: number
  readonly exit: ExitDetails | undefined
  /** For a stop or exit that ended a run: how long the machine ran. */
  readonly ranMs?: number | undefined
  /** The Fly organization of its app. */
  readonly org?: string | undefined
}

/** An event waiting for delivery, with what is known of its machine. */
export interface PendingEvent extends NewEvent {
  readonly machineName: string
  readonly region: string
  readonly size: string
  readonly guest: Guest | undefined
}

const MachineRow = Schema.Struct({
  id: Schema.String,
  app: Schema.String,
  name: Schema.String,
  region: Schema.String,
  size: Schema.String,
  state: Schema.String,
  last_event_key: Schema.NullOr(Schema.String),
  last_event_at: Schema.NullOr(Schema.Number),
  cpu_kind: Schema.NullOr(Schema.String),
  cpus: Schema.NullOr(Schema.Number),
  memory_mb: Schema.NullOr(Schema.Number),
  gpu_kind: Schema.NullOr(Schema.String),
  gpus: Schema.NullOr(Schema.Number),
  org: Schema.NullOr(Schema.String),
})

const EventRow = Schema.Struct({
  key: Schema.String,
  machine_id: Schema.String,
  app: Schema.String,
  type: Schema.String,
  status: Schema.String,
  source: Schema.String,
  timestamp: Schema.Number,
  exit_code: Schema.NullOr(Schema.Number),
  oom_killed: Schema.NullOr(Schema.Number),
  requested_stop: Schema.NullOr(Schema.Number),
  restart_count: Schema.NullOr(Schema.Number),
  exit_error: Schema.NullOr(Schema.String),
  ran_ms: Schema.NullOr(Schema.Number),
  org: Schema.NullOr(Schema.String),
})
type EventRow = typeof EventRow.Type

const MetaRow = Schema.Struct({ value: Schema.String })

const toMachineRecord = (row: typeof MachineRow.Type): MachineRecord => ({
  id: row.id,
  app: row.app,
  name: row.name,
  region: row.region,
  size: row.size,
  state: row.state,
  lastEventKey: row.last_event_key,
  lastEventAt: row.last_event_at,
  guest:
    row.cpus === null
      ? undefined
      : {
          cpus: row.cpus,
          ...(row.cpu_kind === null ? {} : { cpu_kind: row.cpu_kind }),
          ...(row.memory_mb === null ? {} : { memory_mb: row.memory_mb }),
          ...(row.gpu_kind === null ? {} : { gpu_kind: row.gpu_kind }),
          ...(row.gpus === null ? {} : { gpus: row.gpus }),
        },
  ...(row.org === null ? {} : { org: row.org }),
})

const toNewEvent = (row: EventRow): NewEvent => ({
  key: row.key,
  machineId: row.machine_id,
  app: row.app,
  type: row.type,
  status: row.status,
  source: row.source,
  timestamp: row.timestamp,
  exit:
    row.exit_code === null &&
    row.oom_killed === null &&
    row.requested_stop === null
      ? undefined
      : {
          exitCode: row.exit_code,
          oomKilled: row.oom_killed === 1,
          requestedStop: row.requested_stop === 1,
          restartCount: row.restart_count,
          error: row.exit_error,
        },
  ranMs: row.ran_ms ?? undefined,
  ...(row.org === null ? {} : { org: row.org }),
})

const flag = (value: boolean | undefined) =>
  value === undefined ? null : value ? 1 : 0

export class EventStore extends Effect.Service<EventStore>()(
  "@flymon/EventStore",
  {
    effect: Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const MACHINE_COLUMNS = sql.literal(
        "id, app, name, region, size, state, last_event_key, last_event_at, " +
          "cpu_kind, cpus, memory_mb, gpu_kind, gpus, org",
      )

      const fail = storeFailure
      const decode = decodeRows

      const machines = Effect.fn("EventStore.machines")(function* () {
        const rows = yield* sql`SELECT ${MACHINE_COLUMNS} FROM machines`.pipe(
          Effect.mapError(fail("read machines")),
          Effect.flatMap(decode(MachineRow, "read machines")),
        )
        return new Map(rows.map((row) => [row.id, toMachineRecord(row)]))
      })

      const saveMachine = Effect.fn("EventStore.saveMachine")(function* (
        machine: MachineRecord,
        now: number,
      ) {
        yield* sql`INSERT INTO machines ${sql.insert({
          id: machine.id,
          app: machine.app,
          name: machine.name,
          region: machine.region,
          size: machine.size,
          state: machine.state,
          last_event_key: machine.lastEventKey,
          last_event_at: machine.lastEventAt,
          cpu_kind: machine.guest?.cpu_kind ?? null,
          cpus: machine.guest?.cpus ?? null,
          memory_mb: machine.guest?.memory_mb ?? null,
          gpu_kind: machine.guest?.gpu_kind ?? null,
          gpus: machine.guest?.gpus ?? null,
          org: machine.org ?? null,
          updated_at: now,
        })}
          ON CONFLICT (id) DO UPDATE SET
            app = excluded.app,
            name = excluded.name,
            region = excluded.region,
            size = excluded.size,
            state = excluded.state,
            cpu_kind = excluded.cpu_kind,
            cpus = excluded.cpus,
            memory_mb = excluded.memory_mb,
            gpu_kind = excluded.gpu_kind,
            gpus = excluded.gpus,
            org = COALESCE(excluded.org, machines.org),
            last_event_key = CASE
              WHEN machines.last_event_at IS NULL
                OR excluded.last_event_at >= machines.last_event_at
              THEN excluded.last_event_key ELSE machines.last_event_key END,
            last_event_at = MAX(
              COALESCE(machines.last_event_at, 0),
              COALESCE(excluded.last_event_at, 0)),
            updated_at = excluded.updated_at`.pipe(
          Effect.mapError(fail("save machine")),
        )
      })

      /** Stores events not seen before; returns the keys that were new. */
      const insertEvents = Effect.fn("EventStore.insertEvents")(function* (
        events: ReadonlyArray<NewEvent>,
        options: { readonly now: number; readonly baseline: boolean },
      ) {
        const inserted: Array<string> = []
        for (const event of events) {
          const rows = yield* sql`INSERT INTO events ${sql.insert({
            key: event.key,
            machine_id: event.machineId,
            app: event.app,
            type: event.type,
            status: event.status,
            source: event.source,
            timestamp: event.timestamp,
            exit_code: event.exit?.exitCode ?? null,
            oom_killed: flag(event.exit?.oomKilled),
            requested_stop: flag(event.exit?.requestedStop),
            restart_count: event.exit?.restartCount ?? null,
            exit_error: event.exit?.error ?? null,
            ran_ms: event.ranMs ?? null,
            org: event.org ?? null,
            first_seen_at: options.now,
            baseline: options.baseline ? 1 : 0,
            notified_at: options.baseline ? options.now : null,
          })} ON CONFLICT (key) DO NOTHING RETURNING key`.pipe(
            Effect.mapError(fail("insert event")),
          )
          if (rows.length > 0) inserted.push(event.key)
        }
        return inserted
      })

      const machinesById = (ids: ReadonlyArray<string>) =>
        Effect.forEach(
          Chunk.chunksOf(Chunk.fromIterable(new Set(ids)), IN_CHUNK),
          (chunk) =>
            sql`SELECT ${MACHINE_COLUMNS} FROM machines
                WHERE id IN ${sql.in(Chunk.toArray(chunk))}`.pipe(
              Effect.mapError(fail("read machines")),
              Effect.flatMap(decode(MachineRow, "read machines")),
            ),
        ).pipe(
          Effect.map(
            (chunks) =>
              new Map(
                chunks.flat().map((row) => [row.id, toMachineRecord(row)]),
              ),
          ),
        )

      // Both claims below: one UPDATE … RETURNING, so two passes running at
      // once (two Worker invocations, two processes on one file) never
      // claim the same event.
      const claimEvents = (
        operation: string,
        options: {
          readonly now: number
          readonly claimMs: number
          readonly limit: number
          readonly olderThan?: number
        },
      ) =>
        Effect.gen(function* () {
          const stale =
            options.olderThan === undefined
              ? sql.literal("")
              : sql`AND first_seen_at < ${options.olderThan}`
          const rows = yield* sql`UPDATE events
            SET claimed_until = ${options.now + options.claimMs}
            WHERE key IN (
              SELECT key FROM events
              WHERE notified_at IS NULL ${stale}
                AND (claimed_until IS NULL OR claimed_until < ${options.now})
              ORDER BY timestamp, key
              LIMIT ${options.limit})
            RETURNING key, machine_id, app, type, status, source, timestamp,
              exit_code, oom_killed, requested_stop, restart_count,
              exit_error, ran_ms, org`.pipe(
            Effect.mapError(fail(operation)),
            Effect.flatMap(decode(EventRow, operation)),
          )
          const known = yield* machinesById(rows.map((row) => row.machine_id))
          return rows
            .map((row): PendingEvent => {
              const machine = known.get(row.machine_id)
              return {
                ...toNewEvent(row),
                machineName: machine?.name ?? "",
                region: machine?.region ?? "",
                size: machine?.size ?? "unknown",
                guest: machine?.guest,
              }
            })
            .sort((a, b) =>
              a.timestamp === b.timestamp
                ? a.key.localeCompare(b.key)
                : a.timestamp - b.timestamp,
            )
        })

      /** Claims up to `limit` undelivered events, oldest first, for `claimMs`. */
      const claimUndelivered = Effect.fn("EventStore.claimUndelivered")(
        function* (options: {
          readonly now: number
          readonly claimMs: number
          readonly limit: number
        }) {
          return yield* claimEvents("claim events", options)
        },
      )

      /**
       * Claims undelivered events first seen before `olderThan`, oldest
       * first, to be summed up in one message instead of posted one by one.
       */
      const claimStale = Effect.fn("EventStore.claimStale")(
        function* (options: {
          readonly now: number
          readonly claimMs: number
          readonly olderThan: number
          readonly limit: number
        }) {
          return yield* claimEvents("claim stale events", options)
        },
      )

      const updateKeys = updateInChunks

      const markNotified = Effect.fn("EventStore.markNotified")(function* (
        keys: ReadonlyArray<string>,
        now: number,
      ) {
        yield* updateKeys(
          "mark delivered",
          keys,
          (chunk) => sql`UPDATE events
            SET notified_at = ${now}, claimed_until = NULL
            WHERE key IN ${sql.in(chunk)}`,
        )
      })

      const release = Effect.fn("EventStore.release")(function* (
        keys: ReadonlyArray<string>,
      ) {
        yield* updateKeys(
          "release claim",
          keys,
          (chunk) => sql`UPDATE events SET claimed_until = NULL
            WHERE key IN ${sql.in(chunk)} AND notified_at IS NULL`,
        )
      })

      /**
       * Settles events without their own message: Discord rejected them, or
       * a summary stood in for them. `why` goes to `delivery_error`.
       */
      const giveUp = Effect.fn("EventStore.giveUp")(function* (
        keys: ReadonlyArray<string>,
        why: string,
        now: number,
      ) {
        yield* updateKeys(
          "settle undeliverable events",
          keys,
          (chunk) => sql`UPDATE events
            SET notified_at = ${now}, claimed_until = NULL,
              delivery_error = ${why}
            WHERE key IN ${sql.in(chunk)} AND notified_at IS NULL`,
        )
      })

      /**
       * Settles undelivered, unclaimed events without an alert of their own:
       * `into` says what took their place (a storm, a silence, a summary).
       * Returns the keys it settled; an event another pass is delivering
       * right now is left alone.
       */
      const fold = Effect.fn("EventStore.fold")(function* (
        keys: ReadonlyArray<string>,
        into: string,
        now: number,
      ) {
        const folded: Array<string> = []
        for (const chunk of Chunk.chunksOf(
          Chunk.fromIterable(keys),
          IN_CHUNK,
        )) {
          const rows = yield* sql`UPDATE events
            SET notified_at = ${now}, folded_into = ${into}
            WHERE key IN ${sql.in(Chunk.toArray(chunk))}
              AND notified_at IS NULL
              AND (claimed_until IS NULL OR claimed_until < ${now})
            RETURNING key`.pipe(
            Effect.mapError(fail("fold events")),
            Effect.flatMap(
              decode(Schema.Struct({ key: Schema.String }), "fold events"),
            ),
          )
          folded.push(...rows.map((row) => row.key))
        }
        return folded
      })

      const getMeta = Effect.fn("EventStore.getMeta")(function* (key: string) {
        const rows = yield* sql`SELECT value FROM meta WHERE key = ${key}`.pipe(
          Effect.mapError(fail("read meta")),
          Effect.flatMap(decode(MetaRow, "read meta")),
        )
        return rows[0]?.value
      })

      const setMeta = Effect.fn("EventStore.setMeta")(function* (
        key: string,
        value: string,
        now: number,
      ) {
        yield* sql`INSERT INTO meta ${sql.insert({ key, value, updated_at: now })}
          ON CONFLICT (key) DO UPDATE SET
            value = excluded.value, updated_at = excluded.updated_at`.pipe(
          Effect.mapError(fail("write meta")),
        )
      })

      /** Writes `key` only if absent; true when this call wrote it. */
      const claimMeta = Effect.fn("EventStore.claimMeta")(function* (
        key: string,
        value: string,
        now: number,
      ) {
        const rows = yield* sql`INSERT INTO meta ${sql.insert({
          key,
          value,
          updated_at: now,
        })} ON CONFLICT (key) DO NOTHING RETURNING key`.pipe(
          Effect.mapError(fail("write meta")),
        )
        return rows.length > 0
      })

      const deleteMeta = Effect.fn("EventStore.deleteMeta")(function* (
        key: string,
      ) {
        yield* sql`DELETE FROM meta WHERE key = ${key}`.pipe(
          Effect.mapError(fail("write meta")),
        )
      })

      const count = (table: "events" | "machines" | "runs" | "notices") =>
        sql<{ n: number }>`SELECT COUNT(*) AS n FROM ${sql(table)}`.pipe(
          Effect.map((rows) => Number(rows[0]?.n ?? 0)),
          Effect.mapError(fail("count rows")),
        )

      /** Rows per table, for metrics and the cleanup log. */
      const rowCounts = Effect.fn("EventStore.rowCounts")(function* () {
        return {
          events: yield* count("events"),
          machines: yield* count("machines"),
          runs: yield* count("runs"),
          notices: yield* count("notices"),
        }
      })

      /**
       * Deletes what is no longer needed: delivered events and notices
       * older than `before`, the oldest delivered events past `maxEvents`,
       * machines destroyed before `before`, and runs that ended before
       * `runsBefore`. An alert still waiting for Discord is never deleted.
       * Each statement stands alone (no transaction), so D1 runs it too.
       */
      const cleanup = Effect.fn("EventStore.cleanup")(
        function* (options: {
          readonly before: number
          /** Runs are kept for the month-to-date figures too. */
          readonly runsBefore: number
          readonly maxEvents: number
        }) {
          const removed = (rows: ReadonlyArray<unknown>) => rows.length
          const expired = yield* sql`DELETE FROM events
          WHERE notified_at IS NOT NULL AND timestamp < ${options.before}
          RETURNING key`.pipe(Effect.map(removed))
          const total = yield* count("events")
          const over = Math.max(0, total - options.maxEvents)
          const capped =
            over === 0
              ? 0
              : yield* sql`DELETE FROM events WHERE key IN (
                SELECT key FROM events WHERE notified_at IS NOT NULL
                ORDER BY timestamp, key LIMIT ${over})
              RETURNING key`.pipe(Effect.map(removed))
          const machines = yield* sql`DELETE FROM machines
          WHERE state = 'destroyed'
            AND COALESCE(last_event_at, updated_at) < ${options.before}
          RETURNING id`.pipe(Effect.map(removed))
          const runs = yield* sql`DELETE FROM runs
          WHERE stopped_at IS NOT NULL AND stopped_at < ${options.runsBefore}
          RETURNING machine_id`.pipe(Effect.map(removed))
          const notices = yield* sql`DELETE FROM notices
          WHERE notified_at IS NOT NULL AND created_at < ${options.before}
          RETURNING key`.pipe(Effect.map(removed))
          return { events: expired + capped, machines, runs, notices }
        },
        Effect.mapError((error) =>
          error instanceof StoreError ? error : fail("clean up")(error),
        ),
      )

      return {
        ...runStatements(sql),
        ...noticeStatements(sql),
        rowCounts,
        cleanup,
        machines,
        saveMachine,
        insertEvents,
        claimUndelivered,
        markNotified,
        release,
        claimStale,
        giveUp,
        fold,
        getMeta,
        setMeta,
        claimMeta,
        deleteMeta,
      } as const
    }),
  },
) {}
