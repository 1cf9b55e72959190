import { FetchHttpClient } from "@effect/platform"
import * as Migrator from "@effect/sql/Migrator"
import { SqliteClient } from "@effect/sql-sqlite-bun"
import { FakeDiscord } from "@flymon/testkit/FakeDiscord"
import { FakeFly } from "@flymon/testkit/FakeFly"
import {
  ConfigProvider,
  Duration,
  Effect,
  Layer,
  Logger,
  LogLevel,
  Schedule,
} from "effect"
import { readFileSync, readdirSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { EventStore } from "../src/EventStore.ts"
import { FlyEvents } from "../src/FlyEvents.ts"
import { fromSqlFiles } from "../src/Migrations.ts"
import { Notifier } from "../src/Notifier.ts"
import { RetryPolicy, type RetryPolicyShape } from "../src/RetryPolicy.ts"

export const FLY_TOKEN = "FlyV1 fm2_test-macaroon-secret"
export const ORG = "acme"

const migrationsDir = fileURLToPath(new URL("../migrations/", import.meta.url))

export const migrationFiles = Object.fromEntries(
  readdirSync(migrationsDir).map((file) => [
    file,
    readFileSync(join(migrationsDir, file), "utf8"),
  ]),
)

/**
 * Retries without delay, so failure paths finish at once, on the TestClock
 * too (a spaced schedule would wait for a clock that never moves).
 */
export const quickRetry: RetryPolicyShape = {
  fly: Schedule.recurs(2),
  discord: Schedule.recurs(2),
  longestRateLimitWait: Duration.seconds(1),
  requestTimeout: Duration.seconds(2),
}

/** SQLite with the shared migrations applied; in memory unless a file. */
export const layerSqliteAt = (filename: string) =>
  Layer.effectDiscard(
    Migrator.make({})({ loader: fromSqlFiles(migrationFiles) }),
  ).pipe(Layer.provideMerge(SqliteClient.layer({ filename })))

export const layerSqlite = layerSqliteAt(":memory:")

export const layerEnv = (env: Record<string, string>) =>
  Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))

/** Fakes on 127.0.0.1; the fake Fly dates events with `now` when given. */
export const fakesAt = (now?: () => number) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const fly = await FakeFly.start({
        token: FLY_TOKEN,
        org: ORG,
        ...(now === undefined ? {} : { now }),
      })
      // Discord's rate-limit buckets run on the same clock as the monitor.
      const discord = await FakeDiscord.start(now === undefined ? {} : { now })
      return { fly, discord }
    }),
    ({ fly, discord }) =>
      Effect.promise(() => Promise.all([fly.stop(), discord.stop()])),
  )

export const fakes = Effect.acquireRelease(
  Effect.promise(async () => {
    const fly = await FakeFly.start({ token: FLY_TOKEN, org: ORG })
    const discord = await FakeDiscord.start()
    return { fly, discord }
  }),
  ({ fly, discord }) =>
    Effect.promise(() => Promise.all([fly.stop(), discord.stop()])),
)

export const envFor = (fly: FakeFly, discord: FakeDiscord) => ({
  FLY_API_TOKEN: FLY_TOKEN,
  FLY_ORG_SLUG: ORG,
  FLY_API_BASE_URL: fly.url,
  DISCORD_WEBHOOK_URL: discord.webhookUrl(),
})

/** Every core service over real HTTP and a real SQLite database. */
export const layerMonitor = (
  env: Record<string, string>,
  policy: RetryPolicyShape = quickRetry,
  database = layerSqlite,
) =>
  Layer.mergeAll(FlyEvents.Default, EventStore.Default, Notifier.Default).pipe(
    Layer.provideMerge(
      Layer.mergeAll(
        FetchHttpClient.layer,
        RetryPolicy.layer(policy),
        database,
      ),
    ),
    Layer.provide(layerEnv(env)),
    Layer.provide(Logger.minimumLogLevel(LogLevel.None)),
  )
