import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Chunk, Data, Effect, type ParseResult, Schema } from "effect"
import type { ExitDetails } from "./Domain.ts"

export class StoreError extends Data.TaggedError("StoreError")<{
  readonly operation: string
  readonly cause: SqlError | ParseResult.ParseError
}> {
  override get message() {
    return `event store: ${this.operation} failed: ${this.cause.message}`
  }
}

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
}

/** An event waiting for delivery, with what is known of its machine. */
export interface PendingEvent extends NewEvent {
  readonly machineName: string
  readonly region: string
  readonly size: string
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
})

const flag = (value: boolean | undefined) =>
  value === undefined ? null : value ? 1 : 0

// D1 accepts at most 100 bound parameters in one statement.
const IN_CHUNK = 50

export class EventStore extends Effect.Service<EventStore>()(
  "@flymon/EventStore",
  {
    effect: Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient

      const fail =
        (operation: string) => (cause: SqlError | ParseResult.ParseError) =>
          new StoreError({ operation, cause })

      const decode =
        <A, I>(schema: Schema.Schema<A, I>, operation: string) =>
        (rows: ReadonlyArray<unknown>) =>
          Schema.decodeUnknown(Schema.Array(schema))(rows).pipe(
            Effect.mapError(fail(operation)),
          )

      const machines = Effect.fn("EventStore.machines")(function* () {
        const rows = yield* sql`SELECT id, app, name, region, size, state,
            last_event_key, last_event_at FROM machines`.pipe(
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
          updated_at: now,
        })}
          ON CONFLICT (id) DO UPDATE SET
            app = excluded.app,
            name = excluded.name,
            region = excluded.region,
            size = excluded.size,
            state = excluded.state,
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
            sql`SELECT id, app, name, region, size, state, last_event_key,
                last_event_at FROM machines
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

      /**
       * Claims up to `limit` undelivered events, oldest first, for `claimMs`.
       * One UPDATE … RETURNING, so two passes running at once (two Worker
       * invocations, two processes on one file) never claim the same event.
       */
      const claimUndelivered = Effect.fn("EventStore.claimUndelivered")(
        function* (options: {
          readonly now: number
          readonly claimMs: number
          readonly limit: number
        }) {
          const rows = yield* sql`UPDATE events
            SET claimed_until = ${options.now + options.claimMs}
            WHERE key IN (
              SELECT key FROM events
              WHERE notified_at IS NULL
                AND (claimed_until IS NULL OR claimed_until < ${options.now})
              ORDER BY timestamp, key
              LIMIT ${options.limit})
            RETURNING key, machine_id, app, type, status, source, timestamp,
              exit_code, oom_killed, requested_stop, restart_count,
              exit_error`.pipe(
            Effect.mapError(fail("claim events")),
            Effect.flatMap(decode(EventRow, "claim events")),
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
              }
            })
            .sort((a, b) =>
              a.timestamp === b.timestamp
                ? a.key.localeCompare(b.key)
                : a.timestamp - b.timestamp,
            )
        },
      )

      const updateKeys = (
        operation: string,
        keys: ReadonlyArray<string>,
        statement: (
          chunk: ReadonlyArray<string>,
        ) => Effect.Effect<unknown, SqlError>,
      ) =>
        Effect.forEach(
          Chunk.chunksOf(Chunk.fromIterable(keys), IN_CHUNK),
          (chunk) =>
            statement(Chunk.toArray(chunk)).pipe(
              Effect.mapError(fail(operation)),
            ),
          { discard: true },
        )

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

      return {
        machines,
        saveMachine,
        insertEvents,
        claimUndelivered,
        markNotified,
        release,
        getMeta,
        setMeta,
        claimMeta,
        deleteMeta,
      } as const
    }),
  },
) {}
