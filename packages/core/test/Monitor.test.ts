import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import type { FakeDiscord } from "@flymon/testkit/FakeDiscord"
import type { FakeEvent, FakeFly } from "@flymon/testkit/FakeFly"
import { Effect } from "effect"
import { footerKeys } from "../src/DiscordMessage.ts"
import { runPass, selectApps } from "../src/Monitor.ts"
import { envFor, fakes, layerMonitor } from "./support.ts"

const shared = { cpu_kind: "shared", cpus: 1, memory_mb: 256 }

/** Two apps, three machines, one running, each with a little history. */
const seedOrg = (fly: FakeFly) => {
  fly.addApp("shop")
  fly.addApp("dev")
  fly.addMachine("shop", {
    id: "m1",
    name: "web-1",
    region: "ams",
    guest: shared,
  })
  fly.addMachine("shop", {
    id: "m2",
    name: "worker-1",
    region: "iad",
    guest: shared,
  })
  fly.addMachine("dev", {
    id: "m3",
    name: "sandbox",
    region: "cdg",
    guest: shared,
  })
  for (const id of ["m1", "m2", "m3"]) {
    fly.emit(id, { type: "launch", status: "created" })
    fly.start(id)
  }
  fly.exit("m2", { requestedStop: true })
  fly.exit("m3", { exitCode: 0 })
}

/** `event <key>` per event announced, whether alone or grouped by machine. */
const footers = (discord: FakeDiscord) =>
  discord.messages.flatMap((m) =>
    (m.embeds ?? []).flatMap((e: { footer: { text: string } }) =>
      footerKeys(e.footer.text).map((key) => `event ${key}`),
    ),
  )

const keysOf = (...ids: ReadonlyArray<string | undefined>) =>
  ids.map((id) => `event ${id}`)

/** Alerts go out oldest first; events of one millisecond by key. */
const inOrder = (...events: ReadonlyArray<FakeEvent>) =>
  keysOf(
    ...[...events]
      .sort((a, b) =>
        a.timestamp === b.timestamp
          ? a.id!.localeCompare(b.id!)
          : a.timestamp - b.timestamp,
      )
      .map((event) => event.id),
  )

const undelivered = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  return yield* sql<{
    key: string
    claimed_until: number | null
  }>`SELECT key, claimed_until FROM events WHERE notified_at IS NULL ORDER BY key`
})

describe("one pass", () => {
  it.scopedLive("baselines an empty store with one message, no history", () =>
    Effect.gen(function* () {
      const { fly, discord } = yield* fakes
      seedOrg(fly)
      const summary = yield* runPass.pipe(
        Effect.provide(layerMonitor(envFor(fly, discord))),
      )
      assert.deepStrictEqual(discord.messages, [
        {
          username: "Fly Machine Monitor",
          allowed_mentions: { parse: [] },
          content:
            "Now watching org `acme`: 2 apps, 3 machines, 1 running. " +
            "Machine start, stop and exit events from now on will be posted here.",
        },
      ])
      assert.deepStrictEqual(
        [summary.baseline, summary.newEvents, summary.alertsSent],
        [true, 0, 0],
      )
      assert.deepStrictEqual(
        fly.requests.map((r) => `${r.path} ${JSON.stringify(r.query)}`).sort(),
        [
          '/v1/apps {"org_slug":"acme"}',
          '/v1/apps/dev/machines {"include_deleted":"true"}',
          '/v1/apps/shop/machines {"include_deleted":"true"}',
        ],
      )
    }),
  )

  it.scopedLive(
    "announces each new start and exit once; idle passes are silent",
    () =>
      Effect.gen(function* () {
        const { fly, discord } = yield* fakes
        seedOrg(fly)
        yield* Effect.gen(function* () {
          yield* runPass
          const started = fly.start("m2")
          const crashed = fly.exit("m1", { exitCode: 1 })
          fly.emit("m3", { type: "update", status: "replacing" })
          fly.emit("m3", { type: "launch", status: "created" })
          const second = yield* runPass
          const afterSecond = discord.requests.length
          const idle = yield* runPass
          assert.deepStrictEqual(footers(discord), inOrder(started, crashed))
          assert.strictEqual(discord.messages.length, 2)
          assert.sameMembers(
            discord.messages[1]!.embeds!.map((e: { title: string }) => e.title),
            ["worker\\-1 started", "web\\-1 crashed with exit code 1"],
          )
          assert.deepStrictEqual(
            [
              second.newEvents,
              second.alertsSent,
              idle.newEvents,
              idle.alertsSent,
            ],
            [2, 2, 0, 0],
          )
          assert.strictEqual(discord.requests.length, afterSecond)
          assert.deepStrictEqual(yield* undelivered, [])
        }).pipe(Effect.provide(layerMonitor(envFor(fly, discord))))
      }),
  )

  it.scopedLive(
    "fetches the full event list when the embedded tail was cut",
    () =>
      Effect.gen(function* () {
        const { fly, discord } = yield* fakes
        seedOrg(fly)
        yield* Effect.gen(function* () {
          yield* runPass
          const loop = Array.from({ length: 4 }, () => [
            fly.start("m3").id,
            fly.exit("m3", { exitCode: 1, restarting: true }).id,
          ]).flat()
          const summary = yield* runPass
          assert.deepStrictEqual(footers(discord), keysOf(...loop))
          assert.strictEqual(summary.alertsSent, 8)
          assert.deepStrictEqual(
            fly.requests
              .filter((r) => r.path.endsWith("/events"))
              .map((r) => [r.path, r.query.limit]),
            [["/v1/apps/dev/machines/m3/events", "50"]],
          )
          // Eight starts and exits at once would be a restart storm; here
          // every one of them is wanted on its own.
        }).pipe(
          Effect.provide(
            layerMonitor({ ...envFor(fly, discord), STORM_EVENTS: "off" }),
          ),
        )
      }),
  )

  it.scopedLive(
    "keeps alerts Discord did not accept and sends them next pass",
    () =>
      Effect.gen(function* () {
        const { fly, discord } = yield* fakes
        seedOrg(fly)
        yield* Effect.gen(function* () {
          yield* runPass
          const started = fly.start("m3")
          discord.respondNext({ status: 503, body: "down", times: 3 })
          const failed = yield* Effect.flip(runPass)
          assert.strictEqual(failed._tag, "DiscordError")
          assert.deepStrictEqual(yield* undelivered, [
            { key: started.id!, claimed_until: null },
          ])
          const retried = yield* runPass
          const again = yield* runPass
          assert.deepStrictEqual(footers(discord), keysOf(started.id))
          assert.deepStrictEqual(
            [retried.newEvents, retried.alertsSent, again.alertsSent],
            [0, 1, 0],
          )
          assert.deepStrictEqual(yield* undelivered, [])
        }).pipe(Effect.provide(layerMonitor(envFor(fly, discord))))
      }),
  )

  it.scopedLive(
    "skips a machine whose payload is malformed, not the pass",
    () =>
      Effect.gen(function* () {
        const { fly, discord } = yield* fakes
        seedOrg(fly)
        yield* Effect.gen(function* () {
          yield* runPass
          fly.setRaw("m2", { id: "m2", state: 42, events: "nope" })
          const crashed = fly.exit("m1", { exitCode: 2 })
          const summary = yield* runPass
          assert.deepStrictEqual(footers(discord), keysOf(crashed.id))
          assert.deepStrictEqual(
            [summary.skippedMachines, summary.machines, summary.alertsSent],
            [1, 2, 1],
          )
        }).pipe(Effect.provide(layerMonitor(envFor(fly, discord))))
      }),
  )

  it.scopedLive("names events without ids by machine, time and kind", () =>
    Effect.gen(function* () {
      const { fly, discord } = yield* fakes
      seedOrg(fly)
      yield* Effect.gen(function* () {
        yield* runPass
        const event = fly.emit("m1", {
          type: "exit",
          status: "stopped",
          id: null,
          request: { exit_event: { exit_code: 0, requested_stop: true } },
        })
        yield* runPass
        yield* runPass
        assert.deepStrictEqual(footers(discord), [
          `event m1:${event.timestamp}:exit:stopped:flyd`,
        ])
      }).pipe(Effect.provide(layerMonitor(envFor(fly, discord))))
    }),
  )

  it.scopedLive("alerts only on the configured event types", () =>
    Effect.gen(function* () {
      const { fly, discord } = yield* fakes
      seedOrg(fly)
      yield* Effect.gen(function* () {
        yield* runPass
        fly.start("m2")
        const crashed = fly.exit("m2", { exitCode: 3 })
        yield* runPass
        assert.deepStrictEqual(footers(discord), keysOf(crashed.id))
      }).pipe(
        Effect.provide(
          layerMonitor({ ...envFor(fly, discord), MONITORED_EVENTS: "exit" }),
        ),
      )
    }),
  )

  it.scopedLive("fails clearly on a rejected token, without retrying it", () =>
    Effect.gen(function* () {
      const { fly, discord } = yield* fakes
      seedOrg(fly)
      const error = yield* Effect.flip(
        runPass.pipe(
          Effect.provide(
            layerMonitor({
              ...envFor(fly, discord),
              FLY_API_TOKEN: "fo1_wrong-user-token",
            }),
          ),
        ),
      )
      assert.strictEqual(
        error.message,
        "Fly API token rejected (HTTP 401) on GET /v1/apps?org_slug=acme: token rejected",
      )
      assert.notInclude(error.message, "fo1_wrong")
      assert.strictEqual(fly.requests.length, 1)
      assert.strictEqual(discord.requests.length, 0)
    }),
  )

  it.scopedLive("retries Fly 5xx and 429 within the pass", () =>
    Effect.gen(function* () {
      const { fly, discord } = yield* fakes
      seedOrg(fly)
      fly.failNext(
        { path: /^\/v1\/apps$/ },
        { status: 502, body: "<html>bad gateway</html>" },
      )
      fly.failNext(
        { path: /machines$/ },
        { status: 429, body: '{"error":"rate limited"}' },
      )
      const summary = yield* runPass.pipe(
        Effect.provide(layerMonitor(envFor(fly, discord))),
      )
      assert.deepStrictEqual(
        fly.requests.map((r) => [r.path, r.status]).sort(),
        [
          ["/v1/apps", 502],
          ["/v1/apps", 200],
          ["/v1/apps/dev/machines", 429],
          ["/v1/apps/shop/machines", 200],
          ["/v1/apps/dev/machines", 200],
        ].sort(),
      )
      assert.strictEqual(summary.machines, 3)
    }),
  )
})

describe("baseline per app", () => {
  it.scopedLive("records, not announces, an app the first pass missed", () =>
    Effect.gen(function* () {
      const { fly, discord } = yield* fakes
      seedOrg(fly)
      fly.failNext(
        { path: /^\/v1\/apps\/dev\/machines$/ },
        { status: 503, times: 3 },
      )
      yield* Effect.gen(function* () {
        const first = yield* runPass
        const restarted = fly.start("m3")
        const second = yield* runPass
        const crashed = fly.exit("m3", { exitCode: 1 })
        const third = yield* runPass
        assert.deepStrictEqual(
          [first.failedApps, second.newEvents, third.newEvents],
          [1, 0, 1],
        )
        assert.strictEqual(
          discord.messages[0]!.content,
          "Now watching org `acme`: 2 apps (1 listed so far), 2 machines, " +
            "1 running. Machine start, stop and exit events from now on will be " +
            "posted here.",
        )
        assert.notInclude(footers(discord), `event ${restarted.id}`)
        assert.deepStrictEqual(footers(discord), keysOf(crashed.id))
      }).pipe(Effect.provide(layerMonitor(envFor(fly, discord))))
    }),
  )
})

describe("selectApps", () => {
  const names = ["e", "a", "d", "b", "c"]
  it("takes every app when all fit", () => {
    assert.deepStrictEqual(selectApps(names, "c", 9), {
      apps: ["a", "b", "c", "d", "e"],
      next: undefined,
    })
  })
  it("continues from the cursor and wraps round", () => {
    assert.deepStrictEqual(selectApps(names, undefined, 2), {
      apps: ["a", "b"],
      next: "c",
    })
    assert.deepStrictEqual(selectApps(names, "d", 3), {
      apps: ["d", "e", "a"],
      next: "b",
    })
    assert.deepStrictEqual(selectApps(names, "zz", 2), {
      apps: ["a", "b"],
      next: "c",
    })
  })
})
