import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import type { FakeDiscord } from "@flymon/testkit/FakeDiscord"
import type { FakeEvent, FakeFly } from "@flymon/testkit/FakeFly"
import { ConfigProvider, Effect, Either, Option, TestClock } from "effect"
import { CoreSettings, describeConfigError } from "../src/Settings.ts"
import { FLY_TOKEN, layerSqliteAt, ORG } from "./support.ts"
import {
  announcedKeys,
  crashLoop,
  type Emit,
  embedsOf,
  every,
  fakes,
  keysOf,
  MINUTE,
  SECOND,
  startProcess,
  tempDb,
  timeline,
} from "./Timeline.ts"

// The per-app alert limit, pass by pass on simulated time (Timeline.ts).

/** On the hour: the first 1 h window starts here. */
const T0 = Date.UTC(2026, 11, 1, 9, 0)
const HOUR = 60 * MINUTE
const seconds = (ms: number) => Math.floor(ms / 1000)

const machineIds = Array.from(
  { length: 25 },
  (_, j) => `s${String(j + 1).padStart(2, "0")}`,
)

/** An event to emit, and the machine it is about. */
type Step = Emit & { readonly machine: string }

/**
 * App shop: 25 machines each started (one a minute from 9:00:10) and
 * stopped 25 min later, 50 events in the 9:00 window, plus a crash loop
 * of 20 events on s99 from 9:05; five more starts after 10:00. App blog:
 * three events in the 9:00 window.
 */
const scenario = (fly: FakeFly): ReadonlyArray<Step> => {
  fly.addApp("shop")
  fly.addApp("blog")
  for (const [j, id] of machineIds.entries())
    fly.addMachine("shop", { id, name: `web-${j + 1}`, region: "ams" })
  fly.addMachine("shop", { id: "s99", name: "crashy", region: "ams" })
  fly.addMachine("blog", { id: "b1", name: "blog-1", region: "cdg" })
  const stop = (machine: string, at: number): Step => ({
    at,
    machine,
    emit: () => fly.exit(machine, { requestedStop: true, source: "user" }),
  })
  const start = (machine: string, at: number): Step => ({
    at,
    machine,
    emit: () => fly.start(machine),
  })
  return [
    ...machineIds.flatMap((id, j) => [
      start(id, T0 + j * MINUTE + 10 * SECOND),
      stop(id, T0 + (25 + j) * MINUTE + 10 * SECOND),
    ]),
    start("b1", T0 + 2 * MINUTE + 30 * SECOND),
    stop("b1", T0 + 20 * MINUTE + 30 * SECOND),
    start("b1", T0 + 40 * MINUTE + 30 * SECOND),
    ...crashLoop(fly, "s99", T0 + 5 * MINUTE, 10).map((step) => ({
      ...step,
      machine: "s99",
    })),
    ...machineIds
      .slice(0, 5)
      .map((id, j) => start(id, T0 + HOUR + (2 + j) * MINUTE)),
  ]
}

/** The keys of the emitted events, by what they should become. */
const split = (
  emitted: ReadonlyArray<FakeEvent>,
  machine: ReadonlyMap<string, string>,
) => {
  const of = (test: (event: FakeEvent, id: string) => boolean) =>
    keysOf(emitted.filter((event) => test(event, machine.get(event.id!)!)))
  return {
    shop: of((e, id) => e.timestamp < T0 + HOUR && id !== "s99" && id !== "b1"),
    storm: of((_, id) => id === "s99"),
    blog: of((_, id) => id === "b1"),
    later: of((e) => e.timestamp >= T0 + HOUR),
  }
}

const rows = (file: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const events = yield* sql<{
      key: string
      folded_into: string | null
    }>`SELECT key, folded_into FROM events
       WHERE baseline = 0 AND notified_at IS NOT NULL ORDER BY timestamp, key`
    const waiting = yield* sql`SELECT key FROM events
       WHERE notified_at IS NULL`
    const notices = yield* sql<{
      key: string
      created_at: number
      app: string | null
    }>`SELECT key, created_at, app FROM notices ORDER BY created_at, key`
    const windows = yield* sql`SELECT app, window_start, window_end,
        noticed_at FROM throttled_windows ORDER BY window_start, app`
    return { events, waiting, notices, windows }
  }).pipe(Effect.provide(layerSqliteAt(file)))

/** Runs the scenario with `env`, polling every 5 min from 8:50 to 10:20. */
const run = (
  env: Record<string, string>,
  prepare: (discord: FakeDiscord) => void = () => {},
) =>
  Effect.gen(function* () {
    yield* TestClock.setTime(T0 - 10 * MINUTE)
    const { fly, discord } = yield* fakes
    const steps = scenario(fly)
    prepare(discord)
    const file = tempDb()
    const monitor = yield* startProcess(fly, discord, file, env)
    const machine = new Map<string, string>()
    const emitted = yield* timeline(
      steps.map((step) => ({
        at: step.at,
        emit: () => {
          const event = step.emit()
          machine.set(event.id!, step.machine)
          return event
        },
      })),
      every(T0 - 10 * MINUTE, T0 + HOUR + 20 * MINUTE, 5 * MINUTE),
      // A pass Discord failed still stored and triaged everything.
      () => Effect.either(monitor.pass),
    )
    yield* monitor.stop
    return {
      discord,
      groups: split(emitted, machine),
      stored: yield* rows(file),
    }
  })

const limitKey = `limit:shop:${T0}`

describe("per-app alert limit", () => {
  it.scoped(
    "50 events of one app in an hour: 20 alerts, one summary of 30 once the hour is over",
    () =>
      Effect.gen(function* () {
        const { discord, groups, stored } = yield* run({})
        assert.deepStrictEqual(
          [groups.shop.length, groups.storm.length, groups.blog.length],
          [50, 20, 3],
        )
        const storm = `storm:s99:${T0 + 5 * MINUTE + 3 * SECOND}`
        const folded = new Map(
          stored.events.map((row) => [row.key, row.folded_into]),
        )
        // The first 20 of shop by Fly time (the starts of s01 to s20) are
        // posted; the storm's events do not count against the limit.
        assert.deepStrictEqual(
          groups.shop.map((key) => folded.get(key)),
          [...Array(20).fill(null), ...Array(30).fill(limitKey)],
        )
        assert.deepStrictEqual(
          groups.storm.map((key) => folded.get(key)),
          Array(20).fill(storm),
        )
        assert.deepStrictEqual(
          [...groups.blog, ...groups.later].map((key) => folded.get(key)),
          Array(8).fill(null),
        )
        assert.deepStrictEqual(stored.waiting, [])
        assert.deepStrictEqual(
          [...announcedKeys(discord)].sort(),
          [...groups.shop.slice(0, 20), ...groups.blog, ...groups.later].sort(),
        )
        // The summary is queued by the first pass after 10:00, not before.
        assert.deepStrictEqual(stored.notices, [
          { key: storm, created_at: T0 + 10 * MINUTE, app: "shop" },
          { key: `${storm}:calm`, created_at: T0 + 20 * MINUTE, app: "shop" },
          { key: limitKey, created_at: T0 + HOUR, app: "shop" },
        ])
        assert.deepStrictEqual(stored.windows, [
          {
            app: "shop",
            window_start: T0,
            window_end: T0 + HOUR,
            noticed_at: T0 + HOUR,
          },
        ])
        assert.deepStrictEqual(
          embedsOf(discord).filter(
            (embed) => embed.footer.text === limitKey,
          ) as ReadonlyArray<unknown>,
          [
            {
              title: "30 more events on app shop suppressed",
              color: 0xf39c12,
              description:
                `Between <t:${seconds(T0)}:f> and <t:${seconds(T0 + HOUR)}:f>, ` +
                "app shop had more events than alerts allowed: " +
                "APP_ALERT_LIMIT allows 20 per app per 1 h " +
                "(APP_ALERT_WINDOW). The rest were stored without an alert " +
                `(first <t:${seconds(T0 + 20 * MINUTE + 10 * SECOND)}:T>, ` +
                `last <t:${seconds(T0 + 49 * MINUTE + 10 * SECOND)}:T>). ` +
                "To see more of them, raise APP_ALERT_LIMIT or set it to off.",
              fields: [{ name: "Suppressed", value: "exit 25 · start 5" }],
              footer: { text: limitKey },
            },
          ],
        )
      }),
  )

  it.scoped("APP_ALERT_LIMIT=off lets all 50 through", () =>
    Effect.gen(function* () {
      const { discord, groups, stored } = yield* run({
        APP_ALERT_LIMIT: "off",
      })
      assert.deepStrictEqual(
        [...announcedKeys(discord)].sort(),
        [...groups.shop, ...groups.blog, ...groups.later].sort(),
      )
      assert.deepStrictEqual(
        stored.events.filter((row) => row.folded_into?.startsWith("limit:")),
        [],
      )
      assert.deepStrictEqual(
        stored.notices.map((row) => row.key.split(":")[0]),
        ["storm", "storm"],
      )
      assert.deepStrictEqual(stored.windows, [])
    }),
  )

  it.scoped(
    "a Discord outage changes nothing in what is held back, only when the rest is posted",
    () =>
      Effect.gen(function* () {
        const { discord, groups, stored } = yield* run({}, (discord) =>
          discord.respondUntil(T0 + 40 * MINUTE, {
            status: 503,
            body: "upstream connect error",
          }),
        )
        const folded = new Map(
          stored.events.map((row) => [row.key, row.folded_into]),
        )
        assert.deepStrictEqual(
          groups.shop.map((key) => folded.get(key)),
          [...Array(20).fill(null), ...Array(30).fill(limitKey)],
        )
        assert.deepStrictEqual(stored.waiting, [])
        // Nothing got through before 9:40, and nothing twice after.
        const early = discord.requests.filter((r) => r.at < T0 + 40 * MINUTE)
        assert.isAbove(early.length, 0)
        assert.deepStrictEqual(
          early.filter((r) => r.status !== 503),
          [],
        )
        assert.deepStrictEqual(
          [...announcedKeys(discord)].sort(),
          [...groups.shop.slice(0, 20), ...groups.blog, ...groups.later].sort(),
        )
        // A greeting Discord refused does not stop the pass: the storm of
        // 9:05 is found by the 9:10 pass and calms at 9:20, while Discord
        // is still down; both notices wait for it.
        const storm = `storm:s99:${T0 + 5 * MINUTE + 3 * SECOND}`
        assert.deepStrictEqual(stored.notices, [
          { key: storm, created_at: T0 + 10 * MINUTE, app: "shop" },
          { key: `${storm}:calm`, created_at: T0 + 20 * MINUTE, app: "shop" },
          { key: limitKey, created_at: T0 + HOUR, app: "shop" },
        ])
      }),
  )

  it.effect("settings: errors name the variable", () =>
    Effect.gen(function* () {
      const base = {
        FLY_API_TOKEN: FLY_TOKEN,
        FLY_ORG_SLUG: ORG,
        DISCORD_WEBHOOK_URL: "https://discord.test/api/webhooks/1/secret",
      }
      const errors = (env: Record<string, string>) =>
        CoreSettings.pipe(
          Effect.withConfigProvider(
            ConfigProvider.fromMap(
              new Map(Object.entries({ ...base, ...env })),
            ),
          ),
          Effect.either,
          Effect.map(Either.mapLeft(describeConfigError)),
          Effect.map(Either.getLeft),
          Effect.map(Option.getOrElse(() => [] as ReadonlyArray<string>)),
        )
      assert.deepStrictEqual(
        yield* errors({ APP_ALERT_LIMIT: "20", APP_ALERT_WINDOW: "30m" }),
        [],
      )
      assert.deepStrictEqual(yield* errors({ APP_ALERT_LIMIT: "lots" }), [
        'APP_ALERT_LIMIT: invalid: expected a whole number of at least 1, or "off", got "lots"',
      ])
      assert.deepStrictEqual(yield* errors({ APP_ALERT_LIMIT: "0" }), [
        'APP_ALERT_LIMIT: invalid: expected a whole number of at least 1, or "off", got "0"',
      ])
      assert.deepStrictEqual(yield* errors({ APP_ALERT_WINDOW: "1" }), [
        'APP_ALERT_WINDOW: invalid: expected a duration such as "60 seconds", "30s", "5m" or "4h", got "1"',
      ])
      assert.deepStrictEqual(yield* errors({ APP_ALERT_WINDOW: "10s" }), [
        'APP_ALERT_WINDOW: invalid: expected at least 1m, got "10s"',
      ])
    }),
  )
})
