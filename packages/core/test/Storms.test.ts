import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import type { FakeDiscord } from "@flymon/testkit/FakeDiscord"
import { FakeDiscord as Discord } from "@flymon/testkit/FakeDiscord"
import { type FakeEvent, FakeFly } from "@flymon/testkit/FakeFly"
import {
  Chunk,
  Clock,
  ConfigProvider,
  Duration,
  Effect,
  Either,
  Exit,
  Fiber,
  Layer,
  Option,
  Schedule,
  Scope,
  TestClock,
} from "effect"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { runPass } from "../src/Monitor.ts"
import type { RetryPolicyShape } from "../src/RetryPolicy.ts"
import { CoreSettings, describeConfigError } from "../src/Settings.ts"
import { StormSettings } from "../src/Storms.ts"
import {
  envFor,
  FLY_TOKEN,
  layerMonitor,
  layerSqliteAt,
  ORG,
} from "./support.ts"

// Restart storms on simulated time: the TestClock drives the monitor, the
// fake Fly dates its events and the fake Discord its buckets by it.

const T0 = Date.UTC(2026, 11, 1, 9, 0)
const SECOND = 1000
const MINUTE = 60_000

/** Patient, without backoff; request timeouts far beyond any test. */
const policy: RetryPolicyShape = {
  fly: Schedule.recurs(2),
  discord: Schedule.recurs(2),
  longestRateLimitWait: Duration.minutes(2),
  requestTimeout: Duration.days(1),
}
const HORIZON = 12 * 60 * MINUTE

/** Runs `effect`, moving the TestClock on whenever it only waits on it. */
const simulate = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const fiber = yield* Effect.fork(effect)
    while (true) {
      yield* Effect.promise(() => new Promise((r) => setTimeout(r, 1)))
      const exit = yield* Fiber.poll(fiber)
      if (Option.isSome(exit)) return yield* exit.value
      const now = yield* Clock.currentTimeMillis
      const next = Chunk.toReadonlyArray(yield* TestClock.sleeps()).filter(
        (at) => at > now && at - now < HORIZON,
      )
      if (next.length > 0) yield* TestClock.setTime(Math.min(...next))
    }
  })

const at = (ms: number) =>
  Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis
    if (ms < now)
      return yield* Effect.dieMessage(`clock already at +${now - T0} ms`)
    yield* TestClock.setTime(ms)
  })

const fakes = Effect.gen(function* () {
  const clock = yield* Effect.clock
  const now = () => clock.unsafeCurrentTimeMillis()
  const fly = yield* Effect.acquireRelease(
    Effect.promise(() => FakeFly.start({ token: FLY_TOKEN, org: ORG, now })),
    (fly) => Effect.promise(() => fly.stop()),
  )
  const discord = yield* Effect.acquireRelease(
    Effect.promise(() => Discord.start({ now })),
    (discord) => Effect.promise(() => discord.stop()),
  )
  return { fly, discord }
})

const tempDb = () => join(mkdtempSync(join(tmpdir(), "flymon-storms-")), "m.db")

/** One monitor process: services built once, on a database file. */
const startProcess = (
  fly: FakeFly,
  discord: FakeDiscord,
  file: string,
  env: Record<string, string>,
) =>
  Effect.gen(function* () {
    const all = { ...envFor(fly, discord), DIGEST_HOUR: "off", ...env }
    const provider = ConfigProvider.fromMap(new Map(Object.entries(all)))
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(
      layerMonitor(all, policy, layerSqliteAt(file)),
      scope,
    )
    return {
      pass: simulate(
        runPass.pipe(
          Effect.provide(context),
          Effect.withConfigProvider(provider),
        ),
      ),
      stop: Scope.close(scope, Exit.void),
    }
  })

interface Emit {
  readonly at: number
  readonly emit: () => FakeEvent
}

/** Emits each event at its time and runs `pass` at each poll time. */
const timeline = (
  emits: ReadonlyArray<Emit>,
  polls: ReadonlyArray<number>,
  pass: (at: number) => Effect.Effect<unknown, unknown>,
) =>
  Effect.gen(function* () {
    const queue = [...emits].sort((a, b) => a.at - b.at)
    const emitted: Array<FakeEvent> = []
    for (const poll of polls) {
      while (queue.length > 0 && queue[0]!.at <= poll) {
        const next = queue.shift()!
        yield* at(next.at)
        emitted.push(next.emit())
      }
      yield* at(poll)
      yield* pass(poll)
    }
    return emitted
  })

const every = (from: number, to: number, step: number) =>
  Array.from(
    { length: Math.floor((to - from) / step) + 1 },
    (_, i) => from + i * step,
  )

/**
 * A crash loop from `from`: every 15 s an exit (code 1, every tenth one
 * out of memory) 3 s in, and a start 8 s in.
 */
const crashLoop = (
  fly: FakeFly,
  machine: string,
  from: number,
  cycles: number,
): ReadonlyArray<Emit> =>
  Array.from({ length: cycles }, (_, k): ReadonlyArray<Emit> => [
    {
      at: from + k * 15 * SECOND + 3 * SECOND,
      emit: () =>
        fly.exit(machine, {
          ...(k % 10 === 9 ? { oomKilled: true } : { exitCode: 1 }),
          restarting: true,
        }),
    },
    { at: from + k * 15 * SECOND + 8 * SECOND, emit: () => fly.start(machine) },
  ]).flat()

interface Embed {
  readonly title: string
  readonly fields: ReadonlyArray<{ name: string; value: string }>
  readonly footer: { readonly text: string }
}

const embedsOf = (discord: FakeDiscord): ReadonlyArray<Embed> =>
  discord.messages.flatMap((m) => (m.embeds ?? []) as Array<Embed>)

/** Event keys named in footers (`event k`, or `events k1 k2` if grouped). */
const announcedKeys = (discord: FakeDiscord) =>
  embedsOf(discord).flatMap((embed) => {
    const match = /^events? (.+)$/.exec(embed.footer.text)
    return match === null ? [] : match[1]!.split(" ")
  })

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

const keysOf = (events: ReadonlyArray<FakeEvent>) =>
  events.map((event) => event.id!)

const setUp = (fly: FakeFly) => {
  fly.addApp("shop")
  fly.addMachine("shop", {
    id: "m1",
    name: "web-1",
    region: "ams",
    guest: { cpu_kind: "shared", cpus: 1, memory_mb: 256 },
  })
}

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
                name: "Last exit codes",
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
                name: "Last exit codes",
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
      assert.deepStrictEqual(yield* errors({ STORM_UPDATE_EVERY: "soon" }), [
        'STORM_UPDATE_EVERY: invalid: expected a duration such as "60 seconds", "30s", "5m" or "4h", got "soon"',
      ])
    }),
  )
})
