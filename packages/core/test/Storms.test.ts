import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import type { FakeDiscord } from "@flymon/testkit/FakeDiscord"
import type { FakeFly } from "@flymon/testkit/FakeFly"
import {
  ConfigProvider,
  Duration,
  Effect,
  Either,
  Option,
  TestClock,
} from "effect"
import { CoreSettings, describeConfigError } from "../src/Settings.ts"
import { burstStart, StormSettings, stormTip } from "../src/Storms.ts"
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

// Restart storms, pass by pass on simulated time (see Timeline.ts).

const T0 = Date.UTC(2026, 11, 1, 9, 0)

const stormEmbeds = (discord: FakeDiscord) =>
  embedsOf(discord).filter((embed) => embed.footer.text.startsWith("storm:"))

const rows = (file: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const events = yield* sql<{
      key: string
      folded_into: string | null
      notified: number
    }>`SELECT key, folded_into, notified_at IS NOT NULL AS notified
       FROM events WHERE baseline = 0 ORDER BY timestamp, key`
    const notices = yield* sql<{
      key: string
      created_at: number
      app: string | null
    }>`SELECT key, created_at, app FROM notices ORDER BY created_at, key`
    const storms = yield* sql`SELECT key, machine_id, app, started_at,
        detected_at, announced, reported, updates, last_notice_at,
        last_event_at, ended_at
      FROM storms ORDER BY started_at`
    return { events, notices, storms }
  }).pipe(Effect.provide(layerSqliteAt(file)))

const setUp = (fly: FakeFly) => {
  fly.addApp("shop")
  fly.addMachine("shop", {
    id: "m1",
    name: "web-1",
    region: "ams",
    guest: { cpu_kind: "shared", cpus: 1, memory_mb: 256 },
  })
}

describe("storm arithmetic", () => {
  const m = MINUTE
  it("a burst: the first of six events less than the window apart", () => {
    const times = [0, 4 * m, 5 * m, 6 * m, 7 * m, 8 * m, 9 * m, 9.5 * m]
    // At 8 min, six events since 0.
    assert.strictEqual(burstStart(times, 6, 10 * m, 0), 0)
    // Within 5 min only at 9.5 min: 5 min to 9.5 min.
    assert.strictEqual(burstStart(times, 6, 5 * m, 0), 5 * m)
    // Exactly the window apart is not within it.
    const spread = [0, 1, 2, 3, 4, 10 * m]
    assert.strictEqual(burstStart(spread, 6, 10 * m, 0), undefined)
    // Only bursts reaching `from` count.
    assert.strictEqual(burstStart(times, 6, 10 * m, 10 * m), undefined)
    assert.strictEqual(burstStart(times, 9, 10 * m, 0), undefined)
  })

  it("the tip: on while events follow closer than the window", () => {
    assert.deepStrictEqual(stormTip(0, [m, 5 * m], 10 * m, 6 * m), {
      tip: 5 * m,
      over: false,
    })
    assert.deepStrictEqual(stormTip(0, [m, 5 * m], 10 * m, 15 * m), {
      tip: 5 * m,
      over: true,
    })
    // A gap of the window ends it; what follows is not the storm's.
    assert.deepStrictEqual(stormTip(0, [m, 11 * m, 12 * m], 10 * m, 12 * m), {
      tip: m,
      over: true,
    })
    assert.deepStrictEqual(stormTip(0, [], 10 * m, 9 * m), {
      tip: 0,
      over: false,
    })
  })
})

describe("restart storms", () => {
  it.scoped(
    "a crash loop polled every 5 min: one storm alert, one calm note, all 80 events folded",
    () =>
      Effect.gen(function* () {
        yield* TestClock.setTime(T0)
        const { fly, discord } = yield* fakes
        setUp(fly)
        const file = tempDb()
        const monitor = yield* startProcess(fly, discord, file, {})
        const emitted = yield* timeline(
          crashLoop(fly, "m1", T0 + MINUTE, 40),
          every(T0, T0 + 30 * MINUTE, 5 * MINUTE),
          () => monitor.pass,
        )
        yield* monitor.stop
        const storm = `storm:m1:${T0 + MINUTE + 3 * SECOND}`
        const stored = yield* rows(file)
        assert.strictEqual(emitted.length, 80)
        assert.deepStrictEqual(
          stored.events,
          keysOf(emitted).map((key) => ({
            key,
            folded_into: storm,
            notified: 1,
          })),
        )
        assert.deepStrictEqual(stored.notices, [
          { key: storm, created_at: T0 + 5 * MINUTE, app: "shop" },
          { key: `${storm}:calm`, created_at: T0 + 25 * MINUTE, app: "shop" },
        ])
        assert.deepStrictEqual(stored.storms, [
          {
            key: storm,
            machine_id: "m1",
            app: "shop",
            started_at: T0 + MINUTE + 3 * SECOND,
            detected_at: T0 + 5 * MINUTE,
            announced: 1,
            reported: 32,
            updates: 0,
            last_notice_at: T0 + 5 * MINUTE,
            // The last start: cycle 39, 8 s in.
            last_event_at: T0 + MINUTE + 593 * SECOND,
            ended_at: T0 + 25 * MINUTE,
          },
        ])
        assert.deepStrictEqual(announcedKeys(discord), [])
        const seconds = (ms: number) => Math.floor(ms / 1000)
        assert.deepStrictEqual(stormEmbeds(discord), [
          {
            title: "web\\-1 is in a restart storm",
            color: 0xe74c3c,
            fields: [
              { name: "App", value: "shop", inline: true },
              { name: "Machine", value: "web\\-1 `m1`", inline: true },
              {
                name: "Events",
                // By 5 min: 16 exits and 16 starts, 1:03 to 4:53.
                value: `32 start/exit events in 3 min, since <t:${seconds(T0 + 63 * SECOND)}:f>`,
              },
              {
                name: "Last exit codes, oldest first",
                value: "1 · 1 · 1 · 1 · 1\n1 of 16 exits out of memory",
              },
              {
                name: "Cost",
                value:
                  "≈ $0.0027/h while started (baseline price for region ams)",
              },
              {
                name: "From now on",
                value:
                  "Its start, stop and exit events are folded into this " +
                  "storm, with an update every 30 min at most " +
                  "(STORM_UPDATE_EVERY), until 10 min pass without a start " +
                  "or exit (STORM_WINDOW).",
              },
            ],
            footer: { text: storm },
          },
          {
            title: "web\\-1 has calmed down",
            color: 0x2ecc71,
            fields: [
              { name: "App", value: "shop", inline: true },
              { name: "Machine", value: "web\\-1 `m1`", inline: true },
              {
                name: "Storm",
                value:
                  `80 start/exit events over 9 min, <t:${seconds(T0 + 63 * SECOND)}:f> ` +
                  `to <t:${seconds(T0 + 653 * SECOND)}:f>; 48 since the last update`,
              },
              {
                name: "Last exit codes, oldest first",
                value: "1 · 1 · 1 · 1 · 137 (OOM)\n4 of 40 exits out of memory",
              },
              { name: "State now", value: "started" },
              {
                name: "From now on",
                value:
                  "No start or exit for 10 min (STORM_WINDOW): its events " +
                  "are announced one by one again.",
              },
            ],
            footer: { text: `${storm}:calm` },
          },
        ] as ReadonlyArray<unknown>)
      }),
  )

  it.scoped(
    "polled every 30 s: four alerts, then the storm, updates and the calm note, across a restart",
    () =>
      Effect.gen(function* () {
        yield* TestClock.setTime(T0)
        const { fly, discord } = yield* fakes
        setUp(fly)
        const file = tempDb()
        const env = { STORM_UPDATE_EVERY: "3m" }
        let monitor = yield* startProcess(fly, discord, file, env)
        let restarted = false
        const loop = crashLoop(fly, "m1", T0 + MINUTE, 40)
        const emitted = yield* timeline(
          loop,
          every(T0, T0 + 24 * MINUTE, 30 * SECOND),
          (poll) =>
            Effect.gen(function* () {
              // A new process on the same database, in the middle.
              if (poll >= T0 + 6 * MINUTE + 30 * SECOND && !restarted) {
                yield* monitor.stop
                monitor = yield* startProcess(fly, discord, file, env)
                restarted = true
              }
              yield* monitor.pass
            }),
        )
        yield* monitor.stop
        const storm = `storm:m1:${T0 + MINUTE + 3 * SECOND}`
        // The poll at 1:30 saw an exit, a start, an exit and a start: too
        // few for a storm. The poll at 2:00 saw four more.
        const alone = keysOf(emitted.slice(0, 4))
        const stored = yield* rows(file)
        assert.deepStrictEqual(
          stored.events,
          keysOf(emitted).map((key, i) => ({
            key,
            folded_into: i < 4 ? null : storm,
            notified: 1,
          })),
        )
        assert.deepStrictEqual(
          [...announcedKeys(discord)].sort(),
          [...alone].sort(),
        )
        assert.deepStrictEqual(stored.notices, [
          { key: storm, created_at: T0 + 2 * MINUTE, app: "shop" },
          {
            key: `${storm}:update:1`,
            created_at: T0 + 5 * MINUTE,
            app: "shop",
          },
          {
            key: `${storm}:update:2`,
            created_at: T0 + 8 * MINUTE,
            app: "shop",
          },
          {
            key: `${storm}:update:3`,
            created_at: T0 + 11 * MINUTE,
            app: "shop",
          },
          // 10 min after the last start, at 10:53.
          { key: `${storm}:calm`, created_at: T0 + 21 * MINUTE, app: "shop" },
        ])
        assert.deepStrictEqual(
          stormEmbeds(discord).map((embed) => [
            embed.footer.text,
            embed.title,
            embed.fields.find(
              (field) =>
                field.name === "Since the last update" ||
                field.name === "Events" ||
                field.name === "Storm",
            )?.value,
          ]),
          [
            [
              storm,
              "web\\-1 is in a restart storm",
              `8 start/exit events in 50 s, since <t:${Math.floor((T0 + 63 * SECOND) / 1000)}:f>`,
            ],
            [
              `${storm}:update:1`,
              "web\\-1 is still in a restart storm",
              "24 start/exit events",
            ],
            [
              `${storm}:update:2`,
              "web\\-1 is still in a restart storm",
              "24 start/exit events",
            ],
            [
              `${storm}:update:3`,
              "web\\-1 is still in a restart storm",
              "24 start/exit events",
            ],
            [
              `${storm}:calm`,
              "web\\-1 has calmed down",
              `80 start/exit events over 9 min, <t:${Math.floor((T0 + 63 * SECOND) / 1000)}:f> ` +
                `to <t:${Math.floor((T0 + 653 * SECOND) / 1000)}:f>`,
            ],
          ],
        )
        assert.deepStrictEqual(
          stormEmbeds(discord)
            .filter((embed) => embed.footer.text.includes(":update:"))
            .map(
              (embed) =>
                embed.fields.find((field) => field.name === "Lasting")?.value,
            ),
          [
            "3 min so far, 32 start/exit events in all",
            "6 min so far, 56 start/exit events in all",
            "9 min so far, 80 start/exit events in all",
          ],
        )
        assert.deepStrictEqual(
          stored.storms.map((row) => [row.reported, row.updates, row.ended_at]),
          [[80, 3, T0 + 21 * MINUTE]],
        )
      }),
  )

  it.scoped("a new loop after the calm note is a new storm", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const { fly, discord } = yield* fakes
      setUp(fly)
      const file = tempDb()
      const monitor = yield* startProcess(fly, discord, file, {})
      const first = T0 + MINUTE
      const second = T0 + 40 * MINUTE
      const emitted = yield* timeline(
        [
          ...crashLoop(fly, "m1", first, 4),
          // Calm: one exit and one start, announced on their own.
          {
            at: T0 + 30 * MINUTE,
            emit: () => fly.exit("m1", { exitCode: 1 }),
          },
          { at: T0 + 30 * MINUTE + 5 * SECOND, emit: () => fly.start("m1") },
          ...crashLoop(fly, "m1", second, 4),
        ],
        every(T0, T0 + 60 * MINUTE, 5 * MINUTE),
        () => monitor.pass,
      )
      yield* monitor.stop
      const one = `storm:m1:${first + 3 * SECOND}`
      const two = `storm:m1:${second + 3 * SECOND}`
      const stored = yield* rows(file)
      assert.deepStrictEqual(
        stored.events.map((row) => row.folded_into),
        [...Array(8).fill(one), null, null, ...Array(8).fill(two)],
      )
      assert.deepStrictEqual(
        announcedKeys(discord),
        keysOf(emitted.slice(8, 10)),
      )
      assert.deepStrictEqual(
        stored.notices.map((row) => [row.key, row.created_at - T0]),
        [
          [one, 5 * MINUTE],
          [`${one}:calm`, 15 * MINUTE],
          [two, 45 * MINUTE],
          [`${two}:calm`, 55 * MINUTE],
        ],
      )
    }),
  )

  it.scoped(
    "a loop seen late, after the monitor was away, is one storm and at once its calm note",
    () =>
      Effect.gen(function* () {
        yield* TestClock.setTime(T0)
        const { fly, discord } = yield* fakes
        setUp(fly)
        const file = tempDb()
        let monitor = yield* startProcess(fly, discord, file, {})
        const emitted = yield* timeline(
          crashLoop(fly, "m1", T0 + 5 * MINUTE, 20),
          [T0, T0 + 40 * MINUTE, T0 + 45 * MINUTE],
          (poll) =>
            Effect.gen(function* () {
              if (poll === T0 + 40 * MINUTE) {
                yield* monitor.stop
                monitor = yield* startProcess(fly, discord, file, {})
              }
              yield* monitor.pass
            }),
        )
        yield* monitor.stop
        const storm = `storm:m1:${T0 + 5 * MINUTE + 3 * SECOND}`
        const stored = yield* rows(file)
        assert.deepStrictEqual(
          stored.events.map((row) => row.folded_into),
          Array(40).fill(storm),
        )
        assert.strictEqual(emitted.length, 40)
        assert.deepStrictEqual(announcedKeys(discord), [])
        assert.deepStrictEqual(
          stormEmbeds(discord).map((embed) => [embed.footer.text, embed.title]),
          [
            [storm, "web\\-1 is in a restart storm"],
            [`${storm}:calm`, "web\\-1 has calmed down"],
          ],
        )
        assert.deepStrictEqual(
          stored.storms.map((row) => [
            row.started_at,
            row.last_event_at,
            row.reported,
            row.ended_at,
          ]),
          [
            [
              T0 + 5 * MINUTE + 3 * SECOND,
              T0 + 5 * MINUTE + 293 * SECOND,
              40,
              T0 + 40 * MINUTE,
            ],
          ],
        )
      }),
  )

  it.scoped("a silenced machine's crash loop makes no storm", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const { fly, discord } = yield* fakes
      setUp(fly)
      const file = tempDb()
      const monitor = yield* startProcess(fly, discord, file, {
        SILENCES: JSON.stringify([
          { machine: "m1", until: "2026-12-01T10:00Z", reason: "load test" },
        ]),
      })
      const emitted = yield* timeline(
        crashLoop(fly, "m1", T0 + MINUTE, 40),
        every(T0, T0 + 30 * MINUTE, 5 * MINUTE),
        () => monitor.pass,
      )
      yield* monitor.stop
      const stored = yield* rows(file)
      assert.strictEqual(emitted.length, 80)
      assert.deepStrictEqual(stored.storms, [])
      assert.deepStrictEqual(stored.notices, [])
      assert.deepStrictEqual(
        new Set(stored.events.map((row) => row.folded_into?.split(":")[0])),
        new Set(["silence"]),
      )
      assert.deepStrictEqual(announcedKeys(discord), [])
    }),
  )

  it.scoped("deploy-style restarts, four an hour, never make a storm", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const { fly, discord } = yield* fakes
      setUp(fly)
      fly.addMachine("shop", { id: "m2", name: "web-2", region: "ams" })
      const file = tempDb()
      const monitor = yield* startProcess(fly, discord, file, {})
      // Every 15 min both machines are stopped and started again; once,
      // two deploys land 2 min apart.
      const deploys = [
        ...every(T0 + MINUTE, T0 + 3 * 60 * MINUTE, 15 * MINUTE),
        T0 + 33 * MINUTE,
      ]
      const emits = deploys.flatMap((deploy): ReadonlyArray<Emit> =>
        ["m1", "m2"].flatMap((id) => [
          {
            at: deploy,
            emit: () => fly.exit(id, { requestedStop: true, source: "user" }),
          },
          { at: deploy + 20 * SECOND, emit: () => fly.start(id) },
        ]),
      )
      const emitted = yield* timeline(
        emits,
        every(T0, T0 + 3 * 60 * MINUTE + 5 * MINUTE, 5 * MINUTE),
        () => monitor.pass,
      )
      yield* monitor.stop
      const stored = yield* rows(file)
      assert.strictEqual(emitted.length, 12 * 2 * 2 + 4)
      assert.deepStrictEqual(stored.storms, [])
      assert.deepStrictEqual(stored.notices, [])
      assert.deepStrictEqual(
        stored.events.map((row) => [row.folded_into, row.notified]),
        emitted.map(() => [null, 1]),
      )
      assert.deepStrictEqual(
        [...announcedKeys(discord)].sort(),
        keysOf(emitted).sort(),
      )
    }),
  )

  it.effect("settings: defaults, off, and errors that name the variable", () =>
    Effect.gen(function* () {
      const read = <A, E>(
        config: Effect.Effect<A, E>,
        env: Record<string, string>,
      ) =>
        Effect.either(
          config.pipe(
            Effect.withConfigProvider(
              ConfigProvider.fromMap(new Map(Object.entries(env))),
            ),
          ),
        )
      const plain = (settings: StormSettings) => ({
        events: Option.getOrNull(settings.events),
        window: Duration.toMillis(settings.window),
        updateEvery: Duration.toMillis(settings.updateEvery),
      })
      assert.deepStrictEqual(
        Either.map(yield* read(StormSettings, {}), plain),
        Either.right({
          events: 6,
          window: 10 * MINUTE,
          updateEvery: 30 * MINUTE,
        }),
      )
      assert.deepStrictEqual(
        Either.map(
          yield* read(StormSettings, {
            STORM_EVENTS: "off",
            STORM_WINDOW: "2m",
            STORM_UPDATE_EVERY: "off",
          }),
          plain,
        ),
        Either.right({
          events: null,
          window: 2 * MINUTE,
          updateEvery: Infinity,
        }),
      )
      const base = {
        FLY_API_TOKEN: FLY_TOKEN,
        FLY_ORG_SLUG: ORG,
        DISCORD_WEBHOOK_URL: "https://discord.test/api/webhooks/1/secret",
      }
      const errors = (env: Record<string, string>) =>
        read(CoreSettings, { ...base, ...env }).pipe(
          Effect.map(Either.mapLeft(describeConfigError)),
          Effect.map(Either.getLeft),
          Effect.map(Option.getOrElse(() => [] as ReadonlyArray<string>)),
        )
      assert.deepStrictEqual(yield* errors({}), [])
      assert.deepStrictEqual(yield* errors({ STORM_EVENTS: "abc" }), [
        'STORM_EVENTS: invalid: expected a whole number of at least 2, or "off", got "abc"',
      ])
      assert.deepStrictEqual(yield* errors({ STORM_EVENTS: "1" }), [
        'STORM_EVENTS: invalid: expected a whole number of at least 2, or "off", got "1"',
      ])
      assert.deepStrictEqual(yield* errors({ STORM_WINDOW: "10" }), [
        'STORM_WINDOW: invalid: expected a duration such as "60 seconds", "30s", "5m" or "4h", got "10"',
      ])
      assert.deepStrictEqual(yield* errors({ STORM_WINDOW: "1ms" }), [
        'STORM_WINDOW: invalid: expected at least 1m, got "1ms"',
      ])
      assert.deepStrictEqual(yield* errors({ STORM_UPDATE_EVERY: "soon" }), [
        'STORM_UPDATE_EVERY: invalid: expected a duration such as "60 seconds", "30s", "5m" or "4h", got "soon"',
      ])
    }),
  )
})
