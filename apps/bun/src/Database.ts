import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import { SqliteClient } from "@effect/sql-sqlite-bun"
import { fromSqlFiles } from "@flymon/core/Migrations"
import { Config, Effect, Layer } from "effect"
import { mkdirSync, readFileSync, readdirSync } from "node:fs"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"

/** The one schema folder, shared with the Worker's D1 migrations. */
export const migrationsDir = fileURLToPath(
  new URL("../../../packages/core/migrations/", import.meta.url),
)

export const DEFAULT_DATABASE_PATH = "data/monitor.db"

const readMigrations = (dir: string) =>
  Object.fromEntries(
    readdirSync(dir)
      .filter((file) => file.endsWith(".sql"))
      .map((file) => [file, readFileSync(join(dir, file), "utf8")]),
  )

const migrate = Migrator.make({})({
  loader: fromSqlFiles(readMigrations(migrationsDir)),
  table: "flymon_migrations",
})

export const DatabasePath = Config.string("DATABASE_PATH").pipe(
  Config.withDefault(DEFAULT_DATABASE_PATH),
)

/** SQLite through bun:sqlite, its folder created and the schema applied. */
export const layerDatabase = (filename: string) => {
  const path = filename === ":memory:" ? filename : resolve(filename)
  if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true })
  const setup = Layer.effectDiscard(
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      // Two processes on one file wait for each other instead of failing,
      // from the first statement on: switching a new file to WAL needs the
      // lock too, so the timeout is set first and WAL right after it.
      yield* sql.unsafe("PRAGMA busy_timeout = 5000")
      if (path !== ":memory:") yield* sql.unsafe("PRAGMA journal_mode = WAL")
      yield* migrate
    }),
  )
  return setup.pipe(
    Layer.provideMerge(
      SqliteClient.layer({ filename: path, disableWAL: true }),
    ),
  )
}
