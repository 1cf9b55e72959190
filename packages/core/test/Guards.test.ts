import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import type { FakeDiscord } from "@flymon/testkit/FakeDiscord"
import type { FakeFly } from "@flymon/testkit/FakeFly"
import { Effect, TestClock } from "effect"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { runPass } from "../src/Monitor.ts"
import { envFor, fakesAt, layerMonitor, layerSqliteAt } from "./support.ts"

// Cost guards on simulated time: the TestClock drives the monitor and the
// fake Fly dates its events from the same clock.

const HOUR = 3_600_000
const MINUTE = 60_000

let now = 0
const at = (ms: number) =>
  Effect.gen(function* () {
    now = ms
    yield* TestClock.setTime(ms)
  })

const shared1x = { cpu_kind: "shared", cpus: 1, memory_mb: 256 }
const perf1x = { cpu_kind: "performance", cpus: 1, memory_mb: 2048 }

const notices = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  return yield* sql<{
    key: string
    created_at: number
  }>`SELECT key, created_at FROM notices ORDER BY created_at, key`
})

const titles = (discord: FakeDiscord) =>
  discord.messages.flatMap((m) =>
    (m.embeds ?? []).map((e: { title: string }) => e.title),
  )

/** A monitor on a database file that outlives one "process". */
const monitorOn = (
  fly: FakeFly,
  discord: FakeDiscord,
  file: string,
  env: Record<string, string>,
) =>
  layerMonitor(
    { ...envFor(fly, discord), DIGEST_HOUR: "off", ...env },
    undefined,
    layerSqliteAt(file),
  )

const tempDb = () => join(mkdtempSync(join(tmpdir(), "flymon-guards-")), "m.db")

describe("cost guards on simulated time", () => {
  it.scoped(
    "runaway: one alert, reminders, a resolved note; restarts change nothing",
    () =>
      Effect.gen(function* () {
        const t0 = Date.UTC(2026, 11, 1, 0, 0)
        yield* at(t0)
        const { fly, discord } = yield* fakesAt(() => now)
        fly.addApp("ml")
        fly.addMachine("ml", {
          id: "gpu1",
          name: "trainer",
          region: "sjc",
          guest: perf1x,
        })
        const file = tempDb()
        // Stops are not announced here, so the runaway thread ends with
        // its own note (an announced stop carries the run's cost itself).
        const env = {
          MAX_RUNTIME: "4h",
          REMIND_EVERY: "4h",
          MONITORED_EVENTS: "start",
        }
        const process1 = monitorOn(fly, discord, file, env)
        const pass = (layer: typeof process1) =>
          runPass.pipe(Effect.provide(layer))

        yield* pass(process1)
        yield* at(t0 + MINUTE)
        fly.start("gpu1")
        for (const offset of [
          1 * MINUTE,
          4 * HOUR,
          4 * HOUR + MINUTE,
          4 * HOUR + 59 * MINUTE,
        ]) {
          yield* at(t0 + offset)
          yield* pass(process1)
        }
        for (const offset of [8 * HOUR, 8 * HOUR + 30 * MINUTE]) {
          yield* at(t0 + offset)
          yield* pass(process1)
        }
        // A new process on the same database: nothing is repeated early.
        const process2 = monitorOn(fly, discord, file, env)
        for (const offset of [
          9 * HOUR,
          11 * HOUR + 59 * MINUTE,
          12 * HOUR + 29 * MINUTE,
          12 * HOUR + 31 * MINUTE,
        ]) {
          yield* at(t0 + offset)
          yield* pass(process2)
        }
        yield* at(t0 + 13 * HOUR + MINUTE)
        fly.exit("gpu1", { requestedStop: true })
        yield* pass(process2)
        yield* at(t0 + 14 * HOUR)
        yield* pass(process2)

        const started = t0 + MINUTE
        assert.deepStrictEqual(
          yield* notices.pipe(Effect.provide(layerSqliteAt(file))),
          [
            {
              key: `runaway gpu1 ${started} #0`,
              created_at: t0 + 4 * HOUR + MINUTE,
            },
            {
              key: `runaway gpu1 ${started} #1`,
              created_at: t0 + 8 * HOUR + 30 * MINUTE,
            },
            {
              key: `runaway gpu1 ${started} #2`,
              created_at: t0 + 12 * HOUR + 31 * MINUTE,
            },
            {
              key: `runaway gpu1 ${started} resolved`,
              created_at: t0 + 13 * HOUR + MINUTE,
            },
          ],
        )
        // Reminders count from the last alert: 4 h 1 min, 8 h 30 min, then
        // 12 h 31 min, across the restart. performance-1x in sjc costs
        // $31.00 × 2.32/1.94 per 720 h: 13 h ≈ $0.67.
        assert.deepStrictEqual(titles(discord), [
          "trainer started",
          "trainer has been running for 4 h",
          "trainer has been running for 8 h 29 min (still running)",
          "trainer has been running for 12 h 30 min (still running)",
          "trainer stopped after 13 h, ≈ $0.67",
        ])
      }),
  )

  it.scoped(
    "an announced stop ends a runaway run without a second note; stop + exit is one alert",
    () =>
      Effect.gen(function* () {
        const t0 = Date.UTC(2026, 11, 1, 0, 0)
        yield* at(t0)
        const { fly, discord } = yield* fakesAt(() => now)
        fly.addApp("ml")
        fly.addMachine("ml", {
          id: "gpu1",
          name: "trainer",
          region: "sjc",
          guest: perf1x,
        })
        const layer = monitorOn(fly, discord, tempDb(), { MAX_RUNTIME: "4h" })
        yield* runPass.pipe(Effect.provide(layer))
        yield* at(t0 + MINUTE)
        fly.start("gpu1")
        yield* runPass.pipe(Effect.provide(layer))
        yield* at(t0 + 5 * HOUR)
        yield* runPass.pipe(Effect.provide(layer))
        yield* at(t0 + 13 * HOUR + MINUTE)
        fly.emit("gpu1", { type: "stop", status: "stopping", source: "user" })
        const exit = fly.exit("gpu1", { requestedStop: true })
        yield* runPass.pipe(Effect.provide(layer))
        yield* at(t0 + 14 * HOUR)
        yield* runPass.pipe(Effect.provide(layer))
        assert.deepStrictEqual(titles(discord), [
          "trainer started",
          "trainer has been running for 4 h 59 min",
          "trainer stopped",
        ])
        const last = discord.messages.at(-1)!.embeds![0]
        assert.strictEqual(last.footer.text, `event ${exit.id}`)
        assert.deepStrictEqual(last.fields.at(-2), {
          name: "Run",
          value: "ran 13 h · ≈ $0.67",
        })
      }),
  )

  it.scoped("costs a 3-day run correctly across a monitor restart", () =>
    Effect.gen(function* () {
      const t0 = Date.UTC(2026, 11, 1, 0, 0)
      yield* at(t0)
      const { fly, discord } = yield* fakesAt(() => now)
      fly.addApp("dev")
      fly.addMachine("dev", {
        id: "m1",
        name: "box",
        region: "iad",
        guest: shared1x,
      })
      const file = tempDb()
      const env = { MAX_RUNTIME: "30d" }
      yield* runPass.pipe(Effect.provide(monitorOn(fly, discord, file, env)))
      yield* at(t0 + HOUR)
      fly.start("m1")
      yield* runPass.pipe(Effect.provide(monitorOn(fly, discord, file, env)))
      yield* at(t0 + HOUR + 3 * 24 * HOUR)
      fly.exit("m1", { exitCode: 0 })
      yield* runPass.pipe(Effect.provide(monitorOn(fly, discord, file, env)))
      const exit = discord.messages.at(-1)!.embeds![0]
      // shared-cpu-1x 256MB: $1.94 per 720 h, for 72 h = $0.194.
      assert.deepStrictEqual(exit.fields.at(-2), {
        name: "Run",
        value: "ran 3 d · ≈ $0.19 (baseline price for region iad)",
      })
      const start = discord.messages.at(-2)!.embeds![0]
      assert.deepStrictEqual(start.fields.at(-2), {
        name: "Cost",
        value: "≈ $0.0027/h while started (baseline price for region iad)",
      })
    }),
  )

  it.scoped("budget: the highest threshold newly crossed, once per month", () =>
    Effect.gen(function* () {
      const dec1 = Date.UTC(2026, 11, 1, 0, 0)
      yield* at(dec1)
      const { fly, discord } = yield* fakesAt(() => now)
      fly.addApp("api")
      for (const id of ["b", "c", "d"])
        fly.addMachine("api", {
          id,
          name: `api-${id}`,
          region: "iad",
          guest: id === "c" ? shared1x : perf1x,
        })
      const layer = monitorOn(fly, discord, tempDb(), {
        MONTHLY_BUDGET_USD: "40",
        MAX_RUNTIME: "90d",
        // Keeps December's delivered notices in the table for the assertion.
        EVENTS_RETENTION: "90d",
      })
      const passAt = (ms: number) =>
        at(ms).pipe(Effect.zipRight(runPass), Effect.provide(layer))
      yield* passAt(dec1)
      // b: performance-1x all month, ≈ $32.04 projected: past 50 % and 80 %
      // at once, so one alert, for 80 %.
      yield* at(dec1 + MINUTE)
      fly.start("b")
      yield* passAt(dec1 + MINUTE)
      yield* passAt(dec1 + 5 * 24 * HOUR)
      // c: shared-cpu-1x adds about a dollar: still under 100 %.
      yield* at(dec1 + 15 * 24 * HOUR)
      fly.start("c")
      yield* passAt(dec1 + 15 * 24 * HOUR)
      // d: another performance-1x for the last 12 days: past 100 %.
      yield* at(dec1 + 19 * 24 * HOUR)
      fly.start("d")
      yield* passAt(dec1 + 19 * 24 * HOUR)
      yield* passAt(dec1 + 25 * 24 * HOUR)
      // A new month starts the thresholds afresh.
      const jan1 = Date.UTC(2027, 0, 1, 0, 0)
      yield* passAt(jan1)
      yield* passAt(jan1 + HOUR)
      const budgetNotices = (yield* notices.pipe(Effect.provide(layer))).filter(
        (n) => n.key.startsWith("budget"),
      )
      assert.deepStrictEqual(budgetNotices, [
        { key: "budget 2026-12 80 %", created_at: dec1 + MINUTE },
        { key: "budget 2026-12 100 %", created_at: dec1 + 19 * 24 * HOUR },
        { key: "budget 2027-01 100 %", created_at: jan1 },
      ])
      assert.includeMembers(titles(discord), [
        "Fly spend is on course for 80 % of the monthly budget",
        "Fly spend is on course for 100 % of the monthly budget",
      ])
    }),
  )

  it.scoped(
    "digest: once a day at the local hour, quietly, with the figures",
    () =>
      Effect.gen(function* () {
        const start = Date.UTC(2026, 11, 1, 10, 0)
        yield* at(start)
        const { fly, discord } = yield* fakesAt(() => now)
        fly.addApp("web")
        fly.addMachine("web", {
          id: "w1",
          name: "web-1",
          region: "iad",
          guest: perf1x,
        })
        const layer = monitorOn(fly, discord, tempDb(), {
          DIGEST_HOUR: "9",
          DIGEST_TIMEZONE: "Europe/Paris",
          MAX_RUNTIME: "90d",
        })
        for (let hour = 0; hour <= 50; hour++) {
          yield* at(start + hour * HOUR)
          if (hour === 2) fly.start("w1")
          if (hour === 8) fly.exit("w1", { requestedStop: true })
          yield* runPass.pipe(Effect.provide(layer))
        }
        const digests = (yield* notices.pipe(Effect.provide(layer))).filter(
          (n) => n.key.startsWith("digest"),
        )
        // 09:00 in Paris is 08:00 UTC in December.
        assert.deepStrictEqual(digests, [
          { key: "digest 2026-12-02", created_at: Date.UTC(2026, 11, 2, 8, 0) },
          { key: "digest 2026-12-03", created_at: Date.UTC(2026, 11, 3, 8, 0) },
        ])
        const sent = discord.messages.filter((m) =>
          m.embeds?.[0]?.footer?.text?.startsWith("digest"),
        )
        assert.deepStrictEqual(
          sent.map((m) => [m.flags, m.embeds![0].title]),
          [
            [4096, "Daily Fly cost digest for 2026-12-01 (Europe/Paris)"],
            [4096, "Daily Fly cost digest for 2026-12-02 (Europe/Paris)"],
          ],
        )
        // web-1 ran 12:00–18:00 UTC on Dec 1: 6 hours of performance-1x.
        assert.deepStrictEqual(sent[0]!.embeds![0].fields[0], {
          name: "By app",
          value:
            "web: 6.0 machine-hours, ≈ $0.26 yesterday · ≈ $0.26 this month",
        })
        assert.strictEqual(
          sent[1]!.embeds![0].fields[0].value,
          "web: 0.0 machine-hours, ≈ $0.00 yesterday · ≈ $0.26 this month",
        )
      }),
  )
})

describe("auto-stop", () => {
  const overCap = (mode: string, extra: Record<string, string> = {}) =>
    Effect.gen(function* () {
      const t0 = Date.UTC(2026, 11, 1, 0, 0)
      yield* at(t0)
      const { fly, discord } = yield* fakesAt(() => now)
      fly.addApp("dev")
      for (const id of ["a", "b"])
        fly.addMachine("dev", {
          id,
          name: `box-${id}`,
          region: "iad",
          guest: shared1x,
        })
      const layer = monitorOn(fly, discord, tempDb(), {
        AUTO_STOP: mode,
        AUTO_STOP_AFTER: "2h",
        MAX_RUNTIME: "90d",
        ...extra,
      })
      yield* runPass.pipe(Effect.provide(layer))
      yield* at(t0 + MINUTE)
      fly.start("a")
      fly.start("b")
      for (const offset of [
        MINUTE,
        HOUR,
        2 * HOUR + MINUTE,
        3 * HOUR,
        4 * HOUR,
      ]) {
        yield* at(t0 + offset)
        yield* runPass.pipe(Effect.provide(layer))
      }
      const stops = fly.requests.filter((r) => r.method === "POST")
      return { fly, discord, stops, layer }
    })

  it.scoped("off sends no stop request", () =>
    Effect.gen(function* () {
      const { stops, fly } = yield* overCap("off")
      assert.deepStrictEqual(stops, [])
      assert.deepStrictEqual(
        [fly.stateOf("a"), fly.stateOf("b")],
        ["started", "started"],
      )
    }),
  )

  it.scoped(
    "dry-run announces what it would stop, once, and stops nothing",
    () =>
      Effect.gen(function* () {
        const { stops, discord } = yield* overCap("dry-run")
        assert.deepStrictEqual(stops, [])
        assert.sameMembers(
          titles(discord).filter((t) => t.startsWith("Would stop")),
          [
            "Would stop box\\-a (AUTO_STOP=dry-run)",
            "Would stop box\\-b (AUTO_STOP=dry-run)",
          ],
        )
      }),
  )

  it.scoped("on sends exactly one stop per machine and announces it", () =>
    Effect.gen(function* () {
      const { stops, fly, discord } = yield* overCap("on")
      assert.sameDeepMembers(
        stops.map((r) => [r.path, r.status]),
        [
          ["/v1/apps/dev/machines/a/stop", 200],
          ["/v1/apps/dev/machines/b/stop", 200],
        ],
      )
      assert.strictEqual(stops.length, 2)
      assert.sameMembers(fly.stopped, ["a", "b"])
      const announced = titles(discord)
      assert.includeMembers(announced, [
        "Stopped box\\-a (AUTO_STOP=on)",
        "Stopped box\\-b (AUTO_STOP=on)",
        "box\\-a stopped",
        "box\\-b stopped",
      ])
    }),
  )

  it.scoped("with a read-only token, says so once and only alerts", () =>
    Effect.gen(function* () {
      const t0 = Date.UTC(2026, 11, 1, 0, 0)
      yield* at(t0)
      const { fly, discord } = yield* fakesAt(() => now)
      fly.addApp("dev")
      fly.addMachine("dev", {
        id: "a",
        name: "box-a",
        region: "iad",
        guest: shared1x,
      })
      fly.failNext(
        { path: /\/stop$/, method: "POST" },
        { status: 403, body: '{"error":"unauthorized"}', times: 10 },
      )
      const layer = monitorOn(fly, discord, tempDb(), {
        AUTO_STOP: "on",
        AUTO_STOP_AFTER: "2h",
        MAX_RUNTIME: "3h",
      })
      yield* runPass.pipe(Effect.provide(layer))
      yield* at(t0 + MINUTE)
      fly.start("a")
      for (const offset of [
        MINUTE,
        2 * HOUR + MINUTE,
        3 * HOUR + MINUTE,
        5 * HOUR,
      ]) {
        yield* at(t0 + offset)
        yield* runPass.pipe(Effect.provide(layer))
      }
      assert.strictEqual(
        fly.requests.filter((r) => r.method === "POST").length,
        1,
      )
      assert.deepStrictEqual(
        titles(discord).filter((t) => !t.endsWith("started")),
        [
          "AUTO_STOP is on, but the Fly token may not stop machines",
          "box\\-a has been running for 3 h",
        ],
      )
    }),
  )
})
