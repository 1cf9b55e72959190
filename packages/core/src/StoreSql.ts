import type { SqlError } from "@effect/sql/SqlError"
import { Chunk, Data, Effect, type ParseResult, Schema } from "effect"

export class StoreError extends Data.TaggedError("StoreError")<{
  readonly operation: string
  readonly cause: SqlError | ParseResult.ParseError
}> {
  override get message() {
    return `event store: ${this.operation} failed: ${this.cause.message}`
  }
}

// D1 accepts at most 100 bound parameters in one statement.
export const IN_CHUNK = 50

/** Maps a SQL or decoding failure into a StoreError naming `operation`. */
export const storeFailure =
  (operation: string) => (cause: SqlError | ParseResult.ParseError) =>
    new StoreError({ operation, cause })

/** Decodes rows already read; failures name `operation`. */
export const decodeRows =
  <A, I>(schema: Schema.Schema<A, I>, operation: string) =>
  (rows: ReadonlyArray<unknown>) =>
    Schema.decodeUnknown(Schema.Array(schema))(rows).pipe(
      Effect.mapError(storeFailure(operation)),
    )

/** Runs `statement` over `keys` in chunks D1 accepts. */
export const updateInChunks = (
  operation: string,
  keys: ReadonlyArray<string>,
  statement: (chunk: ReadonlyArray<string>) => Effect.Effect<unknown, SqlError>,
) =>
  Effect.forEach(
    Chunk.chunksOf(Chunk.fromIterable(keys), IN_CHUNK),
    (chunk) =>
      statement(Chunk.toArray(chunk)).pipe(
        Effect.mapError(storeFailure(operation)),
      ),
    { discard: true },
  )

// For modules that keep tables of their own next to the EventStore's:
// statements whose failures read as the store's, rows decoded on the way.

/** Decodes a statement's rows with `schema`; failures name `operation`. */
export const readRows =
  <A, I>(schema: Schema.Schema<A, I>, operation: string) =>
  (
    statement: Effect.Effect<ReadonlyArray<unknown>, SqlError>,
  ): Effect.Effect<ReadonlyArray<A>, StoreError> =>
    statement.pipe(
      Effect.mapError(storeFailure(operation)),
      Effect.flatMap(decodeRows(schema, operation)),
    )

/** Runs a statement for its effect; failures name `operation`. */
export const writeRows =
  (operation: string) =>
  (
    statement: Effect.Effect<unknown, SqlError>,
  ): Effect.Effect<void, StoreError> =>
    statement.pipe(Effect.asVoid, Effect.mapError(storeFailure(operation)))
