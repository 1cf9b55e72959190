import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect } from "effect"

/**
 * Turns the shared `migrations/NNNN_name.sql` files into an Effect migrator
 * loader, so SQLite runs exactly the statements wrangler applies to D1.
 */
export const fromSqlFiles = (files: Record<string, string>): Migrator.Loader =>
  Effect.succeed(
    Object.entries(files)
      .flatMap(([file, text]) => {
        const match = /^(\d+)_(.+)\.sql$/.exec(file)
        if (match === null) return []
        const id = Number(match[1])
        const name = match[2]!
        const run = Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          for (const statement of splitStatements(text)) {
            yield* sql.unsafe(statement)
          }
        })
        return [[id, name, Effect.succeed(run)] as const]
      })
      .sort(([a], [b]) => a - b),
  )

// Statements end with a semicolon at the end of a line; comments are dropped
// because some drivers reject a statement that is only a comment.
export const splitStatements = (text: string): ReadonlyArray<string> =>
  text
    .split("\n")
    .filter((line) => !line.trimStart().startsWith("--"))
    .join("\n")
    .split(/;\s*$/m)
    .map((statement) => statement.trim())
    .filter((statement) => statement.length > 0)
