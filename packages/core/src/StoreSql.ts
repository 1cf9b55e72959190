import type { SqlError } from "@effect/sql/SqlError"
import { Effect, type ParseResult, Schema } from "effect"
import { StoreError } from "./EventStore.ts"

// For modules that keep tables of their own next to the EventStore's:
// statements whose failures read as the store's, rows decoded on the way.

/** Decodes a statement's rows with `schema`; failures name `operation`. */
export const readRows =
  <A, I>(schema: Schema.Schema<A, I>, operation: string) =>
  (
    statement: Effect.Effect<ReadonlyArray<unknown>, SqlError>,
  ): Effect.Effect<ReadonlyArray<A>, StoreError> =>
    statement.pipe(
      Effect.flatMap(Schema.decodeUnknown(Schema.Array(schema))),
      Effect.mapError(
        (cause: SqlError | ParseResult.ParseError) =>
          new StoreError({ operation, cause }),
      ),
    )

/** Runs a statement for its effect; failures name `operation`. */
export const writeRows =
  (operation: string) =>
  (
    statement: Effect.Effect<unknown, SqlError>,
  ): Effect.Effect<void, StoreError> =>
    statement.pipe(
      Effect.asVoid,
      Effect.mapError((cause) => new StoreError({ operation, cause })),
    )
