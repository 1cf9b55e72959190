import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { FakeDiscord } from "@flymon/testkit/FakeDiscord"
import { FakeFly } from "@flymon/testkit/FakeFly"
import {
  ConfigProvider,
  Effect,
  Either,
  HashMap,
  Logger,
  LogLevel,
  Redacted,
  TestClock,
} from "effect"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { footerKeys } from "../src/DiscordMessage.ts"
import { runPass, runPassWith } from "../src/Monitor.ts"
import { fairShares } from "../src/OrgPlan.ts"
import { describeConfigError, FlySettings } from "../src/Settings.ts"
import { layerMonitor, layerSqliteAt } from "./support.ts"

// Several Fly orgs in one monitor, on simulated time: the fake Fly serves
// each org's apps to that org's token only.

const MINUTE = 60_000
const HOUR = 60 * MINUTE
const T0 = Date.UTC(2026, 11, 1, 10, 0)

const TOKENS = {
  acme: "FlyV1 fm2_acme-secret-macaroon",
  personal: "fo1_personal-secret-user-token",
  lab: "FlyV1 fm2_lab-secret-macaroon",
} as const
const AUTH = {
  acme: "FlyV1 fm2_acme-secret-macaroon",
  personal: "Bearer fo1_personal-secret-user-token",
  lab: "FlyV1 fm2_lab-secret-macaroon",
}
type Org = keyof typeof TOKENS

let now = T0
const at = (ms: number) =>
  Effect.gen(function* () {
    now = ms
    yield* TestClock.setTime(ms)
  })

/** The fake Fly knows every org of TOKENS; the monitor only those given. */
const fakes = Effect.acquireRelease(
  Effect.promise(async () => {
    const fly = await FakeFly.start({ orgs: TOKENS, now: () => now })
    const discord = await FakeDiscord.start({ now: () => now })
    return { fly, discord }
  }),
  ({ fly, discord }) =>
    Effect.promise(() => Promise.all([fly.stop(), discord.stop()])),
)

const envFor = (
  fly: FakeFly,
  discord: FakeDiscord,
  orgs: ReadonlyArray<Org>,
  extra: Record<string, string> = {},
) => ({
  FLY_ORGS: JSON.stringify(
    Object.fromEntries(orgs.map((org) => [org, TOKENS[org]])),
  ),
  FLY_API_BASE_URL: fly.url,
  DISCORD_WEBHOOK_URL: discord.webhookUrl(),
  DIGEST_HOUR: "off",
  ...extra,
})

const shared = { cpu_kind: "shared", cpus: 1, memory_mb: 256 }

/** acme: app shop, machine a1; personal: app blog, machine p1. Both run. */
const seed = (fly: FakeFly) => {
  fly.addApp("shop", { org: "acme" })
  fly.addApp("blog", { org: "personal" })
  fly.addApp("lab-app", { org: "lab" })
  const machines = [
    ["shop", "a1", "web"],
    ["blog", "p1", "blog-vm"],
    ["lab-app", "l1", "notebook"],
  ] as const
  for (const [app, id, name] of machines) {
    fly.addMachine(app, { id, name, region: "ams", guest: shared })
    fly.emit(id, { type: "launch", status: "created" })
    fly.start(id)
  }
}

const rows = <A extends object>(query: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe<A>(query))

const announcedKeys = (discord: FakeDiscord) =>
  discord.messages.flatMap((m) =>
    (m.embeds ?? []).flatMap((e: { footer: { text: string } }) =>
      footerKeys(e.footer.text),
    ),
  )

const greetings = (discord: FakeDiscord) =>
  discord.messages
    .map((m) => m.content)
    .filter((text): text is string => text?.startsWith("Now watching") ?? false)

const greeting = (org: string) =>
  `Now watching org \`${org}\`: 1 app, 1 machine, 1 running. ` +
  "Machine start, stop and exit events from now on will be posted here."

/** Each Fly request as [method path, org slug queried, Authorization]. */
const flyCalls = (fly: FakeFly, from = 0) =>
  fly.requests
    .slice(from)
    .map((r) => [
      `${r.method} ${r.path}`,
      r.query.org_slug ?? "",
      r.authorization ?? "",
      r.status,
    ])

const tempDb = () => join(mkdtempSync(join(tmpdir(), "flymon-orgs-")), "m.db")

interface LogLine {
  readonly level: string
  readonly message: string
  readonly annotations: Record<string, unknown>
}

/** Runs `effect` with every log line at Debug and above collected. */
const logged = <A, E, R>(effect: Effect.Effect<A, E, R>) => {
  const lines: Array<LogLine> = []
  const collect = Logger.make(({ logLevel, message, annotations }) => {
    lines.push({
      level: logLevel.label,
      message: [message].flat().map(String).join(" "),
      annotations: Object.fromEntries(HashMap.toEntries(annotations)),
    })
  })
  return effect.pipe(
    Logger.withMinimumLogLevel(LogLevel.Debug),
    Effect.provide(Logger.replace(Logger.defaultLogger, collect)),
    Effect.map((value) => ({ value, lines })),
  )
}

describe("several Fly orgs", () => {
  it.scoped(
    "announces each org's events once, stored with their org, after one greeting per org",
    () =>
      Effect.gen(function* () {
        yield* at(T0)
        const { fly, discord } = yield* fakes
        seed(fly)
        yield* Effect.gen(function* () {
          const first = yield* runPass
          yield* at(T0 + MINUTE)
          const crashed = fly.exit("a1", { exitCode: 1 })
          yield* at(T0 + MINUTE + 1000)
          const stopped = fly.exit("p1", { requestedStop: true })
          const second = yield* runPass
          yield* at(T0 + 2 * MINUTE)
          const sentBefore = discord.requests.length
          const idle = yield* runPass

          assert.deepStrictEqual(greetings(discord), [
            greeting("acme"),
            greeting("personal"),
          ])
          assert.deepStrictEqual(announcedKeys(discord), [
            crashed.id,
            stopped.id,
          ])
          assert.strictEqual(discord.requests.length, sentBefore)
          assert.deepStrictEqual(
            [first, second, idle].map((s) => [
              s.orgs,
              s.failedOrgs,
              s.apps,
              s.machines,
              s.newEvents,
              s.baseline,
            ]),
            [
              [2, 0, 2, 2, 0, true],
              [2, 0, 2, 2, 2, false],
              [2, 0, 2, 2, 0, false],
            ],
          )
          assert.deepStrictEqual(
            yield* rows(
              `SELECT key, org, app, machine_id, type, baseline,
                 notified_at IS NOT NULL AS delivered
               FROM events WHERE baseline = 0 ORDER BY timestamp, key`,
            ),
            [
              {
                key: crashed.id,
                org: "acme",
                app: "shop",
                machine_id: "a1",
                type: "exit",
                baseline: 0,
                delivered: 1,
              },
              {
                key: stopped.id,
                org: "personal",
                app: "blog",
                machine_id: "p1",
                type: "exit",
                baseline: 0,
                delivered: 1,
              },
            ],
          )
          // The history recorded on the first pass has its org too.
          assert.deepStrictEqual(
            yield* rows(
              "SELECT org, count(*) AS n FROM events WHERE baseline = 1 GROUP BY org ORDER BY org",
            ),
            [
              { org: "acme", n: 1 },
              { org: "personal", n: 1 },
            ],
          )
          assert.deepStrictEqual(
            yield* rows("SELECT id, app, org, state FROM machines ORDER BY id"),
            [
              { id: "a1", app: "shop", org: "acme", state: "stopped" },
              { id: "p1", app: "blog", org: "personal", state: "stopped" },
            ],
          )
          assert.deepStrictEqual(
            yield* rows(
              `SELECT key, value FROM meta WHERE key LIKE 'baseline%'
                 OR key LIKE 'watching%' OR key LIKE '%cursor%'
                 OR key = 'unsuffixed_keys_org' ORDER BY key`,
            ),
            [
              { key: "baseline_at", value: String(T0) },
              { key: "baseline_at:acme", value: String(T0) },
              { key: "baseline_at:personal", value: String(T0) },
              { key: "unsuffixed_keys_org", value: "" },
              { key: "watching_sent_at:acme", value: String(T0) },
              { key: "watching_sent_at:personal", value: String(T0) },
            ],
          )
        }).pipe(
          Effect.provide(
            layerMonitor(envFor(fly, discord, ["acme", "personal"])),
          ),
        )
        // Each org's requests carry that org's own token.
        const pass = [
          ["GET /v1/apps", "acme", AUTH.acme, 200],
          ["GET /v1/apps", "personal", AUTH.personal, 200],
          ["GET /v1/apps/shop/machines", "", AUTH.acme, 200],
          ["GET /v1/apps/blog/machines", "", AUTH.personal, 200],
        ]
        assert.deepStrictEqual(
          flyCalls(fly).sort(),
          [...pass, ...pass, ...pass].sort(),
        )
      }),
  )

  it.scoped("sends each org's greeting where that org's alerts go", () =>
    Effect.gen(function* () {
      yield* at(T0)
      const { fly, discord } = yield* fakes
      seed(fly)
      const personalHook = discord.webhookUrl("42", "personal-hook")
      yield* runPass.pipe(
        Effect.provide(
          layerMonitor(
            envFor(fly, discord, ["acme", "personal"], {
              DISCORD_ROUTES: JSON.stringify([
                { orgs: "personal", webhook: personalHook },
              ]),
            }),
          ),
        ),
      )
      assert.deepStrictEqual(
        discord.requests.map((r) => [
          r.path,
          (r.body as { content: string }).content,
        ]),
        [
          ["/api/webhooks/1234567890/fake-webhook-token", greeting("acme")],
          ["/api/webhooks/42/personal-hook", greeting("personal")],
        ],
      )
    }),
  )

  it.scoped(
    "one org's token rejected: the other's alerts go out, the pass fails naming the org, never a token",
    () =>
      Effect.gen(function* () {
        yield* at(T0)
        const { fly, discord } = yield* fakes
        seed(fly)
        yield* Effect.gen(function* () {
          yield* runPass
          yield* at(T0 + MINUTE)
          const crashed = fly.exit("a1", { exitCode: 1 })
          const stopped = fly.exit("p1", { exitCode: 0 })
          fly.setToken("personal", "fo1_rotated-elsewhere")
          const requestsBefore = fly.requests.length

          const { value: failed, lines } = yield* logged(Effect.flip(runPass))

          assert.strictEqual(failed._tag, "FlyApiError")
          assert.strictEqual(
            failed.message,
            "Fly API token rejected (HTTP 401) for org personal on GET /v1/apps?org_slug=personal: token rejected",
          )
          assert.deepStrictEqual(announcedKeys(discord), [crashed.id])
          assert.deepStrictEqual(
            yield* rows(
              "SELECT key, org, notified_at IS NOT NULL AS delivered FROM events WHERE baseline = 0",
            ),
            [{ key: crashed.id, org: "acme", delivered: 1 }],
          )
          // A rejected token is not retried; the other org is polled.
          assert.deepStrictEqual(flyCalls(fly, requestsBefore).sort(), [
            ["GET /v1/apps", "acme", AUTH.acme, 200],
            ["GET /v1/apps", "personal", AUTH.personal, 401],
            ["GET /v1/apps/shop/machines", "", AUTH.acme, 200],
          ])
          const warning = lines.find(
            (line) =>
              line.message ===
              "could not poll an org this pass; the other orgs go on",
          )
          assert.deepStrictEqual(warning, {
            level: "WARN",
            message: "could not poll an org this pass; the other orgs go on",
            annotations: { org: "personal", error: failed.message },
          })
          const done = lines.find((line) =>
            line.message.startsWith("pass done"),
          )
          assert.strictEqual(
            done?.message,
            "pass done, an org could not be polled",
          )
          assert.deepStrictEqual(
            [done?.annotations.orgs, done?.annotations.failed_orgs],
            [1, 1],
          )
          const everything = JSON.stringify(lines) + failed.message
          for (const secret of [
            "acme-secret-macaroon",
            "personal-secret-user-token",
          ])
            assert.notInclude(everything, secret)

          // Put back, nothing of that org is lost.
          fly.setToken("personal", TOKENS.personal)
          yield* at(T0 + 2 * MINUTE)
          const recovered = yield* runPass
          assert.deepStrictEqual(announcedKeys(discord), [
            crashed.id,
            stopped.id,
          ])
          assert.deepStrictEqual(
            [recovered.orgs, recovered.failedOrgs, recovered.newEvents],
            [2, 0, 1],
          )
        }).pipe(
          Effect.provide(
            layerMonitor(envFor(fly, discord, ["acme", "personal"])),
          ),
        )
      }),
  )

  it.scoped("fails at once, before any delivery, when no org answers", () =>
    Effect.gen(function* () {
      yield* at(T0)
      const { fly, discord } = yield* fakes
      seed(fly)
      const error = yield* Effect.flip(
        runPass.pipe(
          Effect.provide(
            layerMonitor(
              envFor(fly, discord, ["acme", "personal"], {
                FLY_ORGS: JSON.stringify({
                  acme: "fo1_wrong",
                  personal: "fo1_wrong-too",
                }),
              }),
            ),
          ),
        ),
      )
      assert.strictEqual(
        error.message,
        "Fly API token rejected (HTTP 401) for org acme on GET /v1/apps?org_slug=acme: token rejected",
      )
      assert.deepStrictEqual(discord.requests, [])
    }),
  )

  it.scoped(
    "an org added to an existing database is baselined; the others go on",
    () =>
      Effect.gen(function* () {
        yield* at(T0)
        const { fly, discord } = yield* fakes
        seed(fly)
        const file = tempDb()
        const monitor = (orgs: ReadonlyArray<Org>) =>
          layerMonitor(
            envFor(fly, discord, orgs),
            undefined,
            layerSqliteAt(file),
          )
        yield* runPass.pipe(Effect.provide(monitor(["acme", "personal"])))
        yield* at(T0 + MINUTE)
        // History of the new org, from before it was watched.
        fly.exit("l1", { exitCode: 2 })
        fly.start("l1")
        const crashed = fly.exit("a1", { exitCode: 1 })

        const withLab = monitor(["acme", "personal", "lab"])
        yield* at(T0 + 2 * MINUTE)
        const added = yield* runPass.pipe(Effect.provide(withLab))
        yield* at(T0 + 3 * MINUTE)
        const labStopped = fly.exit("l1", { requestedStop: true })
        yield* runPass.pipe(Effect.provide(withLab))

        assert.deepStrictEqual(greetings(discord), [
          greeting("acme"),
          greeting("personal"),
          greeting("lab"),
        ])
        assert.deepStrictEqual(announcedKeys(discord), [
          crashed.id,
          labStopped.id,
        ])
        assert.deepStrictEqual(
          [added.orgs, added.newEvents, added.baseline],
          [3, 1, true],
        )
        assert.deepStrictEqual(
          yield* rows(
            "SELECT type, baseline FROM events WHERE org = 'lab' ORDER BY timestamp",
          ).pipe(Effect.provide(layerSqliteAt(file))),
          [
            { type: "start", baseline: 1 },
            { type: "exit", baseline: 1 },
            { type: "start", baseline: 1 },
            { type: "exit", baseline: 0 },
          ],
        )
      }),
  )

  it.scoped("auto-stop stops a machine with the token of its own org", () =>
    Effect.gen(function* () {
      yield* at(T0)
      const { fly, discord } = yield* fakes
      seed(fly)
      const layer = layerMonitor(
        envFor(fly, discord, ["acme", "personal"], {
          AUTO_STOP: "on",
          AUTO_STOP_AFTER: "2h",
          MAX_RUNTIME: "off",
        }),
      )
      yield* runPass.pipe(Effect.provide(layer))
      yield* at(T0 + 2 * HOUR + MINUTE)
      yield* runPass.pipe(Effect.provide(layer))
      assert.deepStrictEqual(
        fly.requests
          .filter((r) => r.method === "POST")
          .map((r) => [r.path, r.authorization, r.status])
          .sort(),
        [
          ["/v1/apps/blog/machines/p1/stop", AUTH.personal, 200],
          ["/v1/apps/shop/machines/a1/stop", AUTH.acme, 200],
        ],
      )
      assert.sameMembers(fly.stopped, ["a1", "p1"])
    }),
  )
})

describe("a database from before orgs", () => {
  /**
   * A single-org store as the monitor wrote it before orgs: progress under
   * unsuffixed keys, no org on any row.
   */
  const oldStore = (fly: FakeFly, discord: FakeDiscord, file: string) =>
    Effect.gen(function* () {
      yield* runPass.pipe(
        Effect.provide(
          layerMonitor(
            {
              FLY_API_TOKEN: TOKENS.acme,
              FLY_ORG_SLUG: "acme",
              FLY_API_BASE_URL: fly.url,
              DISCORD_WEBHOOK_URL: discord.webhookUrl(),
              DIGEST_HOUR: "off",
            },
            undefined,
            layerSqliteAt(file),
          ),
        ),
      )
      yield* Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM meta WHERE key = 'unsuffixed_keys_org'`
        yield* sql`UPDATE machines SET org = NULL`
        yield* sql`UPDATE events SET org = NULL`
      }).pipe(Effect.provide(layerSqliteAt(file)))
    })

  it.scoped(
    "auto-stop takes the only org for a machine stored without one; with several, it waits to know",
    () =>
      Effect.gen(function* () {
        yield* at(T0)
        const { fly, discord } = yield* fakes
        seed(fly)
        const stopping = { AUTO_STOP: "on", AUTO_STOP_AFTER: "2h" }
        const monitor = (file: string, orgs: ReadonlyArray<Org>) =>
          layerMonitor(
            envFor(fly, discord, orgs, { ...stopping, MAX_RUNTIME: "off" }),
            undefined,
            layerSqliteAt(file),
          )
        const stops = () =>
          fly.requests
            .filter((r) => r.method === "POST")
            .map((r) => [r.path, r.authorization, r.status])
        // The shop listing fails, so a1 keeps its record without an org.
        const shopDown = () =>
          fly.failNext(
            { path: /^\/v1\/apps\/shop\/machines$/ },
            { status: 503, times: 3 },
          )

        const alone = tempDb()
        yield* oldStore(fly, discord, alone)
        yield* at(T0 + 2 * HOUR + MINUTE)
        shopDown()
        yield* runPass.pipe(Effect.provide(monitor(alone, ["acme"])))
        assert.deepStrictEqual(stops(), [
          ["/v1/apps/shop/machines/a1/stop", AUTH.acme, 200],
        ])

        fly.start("a1")
        yield* at(T0 + 3 * HOUR)
        const several = tempDb()
        yield* oldStore(fly, discord, several)
        yield* at(T0 + 5 * HOUR + MINUTE)
        shopDown()
        const both = monitor(several, ["acme", "personal"])
        const { lines } = yield* logged(runPass).pipe(Effect.provide(both))
        assert.deepStrictEqual(stops().slice(1), [
          ["/v1/apps/blog/machines/p1/stop", AUTH.personal, 200],
        ])
        assert.deepStrictEqual(
          lines
            .filter((line) => line.message === "could not stop a machine")
            .map((line) => line.annotations),
          [
            {
              app: "shop",
              machine: "a1",
              error:
                "Fly org unknown: the machine's org is not known yet; it is recorded when the machine is next listed",
            },
          ],
        )
        yield* at(T0 + 5 * HOUR + 2 * MINUTE)
        yield* runPass.pipe(Effect.provide(both))
        assert.deepStrictEqual(stops().slice(2), [
          ["/v1/apps/shop/machines/a1/stop", AUTH.acme, 200],
        ])
      }),
  )

  it.scoped("keeps its baseline and greeting with the same one org", () =>
    Effect.gen(function* () {
      yield* at(T0)
      const { fly, discord } = yield* fakes
      seed(fly)
      const file = tempDb()
      yield* oldStore(fly, discord, file)
      yield* at(T0 + MINUTE)
      const crashed = fly.exit("a1", { exitCode: 1 })
      const summary = yield* runPass.pipe(
        Effect.provide(
          layerMonitor(
            envFor(fly, discord, ["acme"]),
            undefined,
            layerSqliteAt(file),
          ),
        ),
      )
      assert.deepStrictEqual(greetings(discord), [greeting("acme")])
      assert.deepStrictEqual(announcedKeys(discord), [crashed.id])
      assert.deepStrictEqual([summary.baseline, summary.newEvents], [false, 1])
      assert.deepStrictEqual(
        yield* rows(
          "SELECT value FROM meta WHERE key = 'unsuffixed_keys_org'",
        ).pipe(Effect.provide(layerSqliteAt(file))),
        [{ value: "acme" }],
      )
    }),
  )

  it.scoped(
    "keeps its org's baseline when a second org comes with the upgrade",
    () =>
      Effect.gen(function* () {
        yield* at(T0)
        const { fly, discord } = yield* fakes
        seed(fly)
        const file = tempDb()
        yield* oldStore(fly, discord, file)
        yield* at(T0 + MINUTE)
        const crashed = fly.exit("a1", { exitCode: 1 })
        const summary = yield* runPass.pipe(
          Effect.provide(
            layerMonitor(
              // The old org second: found by its apps, not its position.
              envFor(fly, discord, ["personal", "acme"]),
              undefined,
              layerSqliteAt(file),
            ),
          ),
        )
        assert.deepStrictEqual(greetings(discord), [
          greeting("acme"),
          greeting("personal"),
        ])
        assert.deepStrictEqual(announcedKeys(discord), [crashed.id])
        assert.deepStrictEqual([summary.baseline, summary.newEvents], [true, 1])
        assert.deepStrictEqual(
          yield* rows(
            `SELECT key FROM meta WHERE key LIKE 'baseline%'
               OR key LIKE 'watching%' OR key = 'unsuffixed_keys_org'
             ORDER BY key`,
          ).pipe(Effect.provide(layerSqliteAt(file))),
          [
            { key: "baseline_at" },
            { key: "baseline_at:personal" },
            { key: "unsuffixed_keys_org" },
            { key: "watching_sent_at" },
            { key: "watching_sent_at:personal" },
          ],
        )
      }),
  )
})

describe("a Fly request budget over several orgs", () => {
  /** acme: apps a0…a9; personal: apps p0…p2; one machine each. */
  const manyApps = (fly: FakeFly) => {
    const apps = [
      ...Array.from({ length: 10 }, (_, i) => [`a${i}`, "acme"] as const),
      ...Array.from({ length: 3 }, (_, i) => [`p${i}`, "personal"] as const),
    ]
    for (const [app, org] of apps) {
      fly.addApp(app, { org })
      fly.addMachine(app, { id: `m-${app}`, name: app, region: "ams" })
    }
  }

  /** The apps whose machines each budgeted pass listed. */
  const passes = (budget: number, count: number) =>
    Effect.gen(function* () {
      yield* at(T0)
      const { fly, discord } = yield* fakes
      manyApps(fly)
      const polled: Array<ReadonlyArray<string>> = []
      const requests: Array<number> = []
      yield* Effect.gen(function* () {
        for (let pass = 0; pass < count; pass++) {
          yield* at(T0 + pass * 5 * MINUTE)
          const before = fly.requests.length
          const summary = yield* runPassWith({ flyRequestBudget: budget })
          const sent = fly.requests.slice(before)
          requests.push(sent.length)
          assert.strictEqual(summary.flyRequests, sent.length)
          polled.push(
            sent.flatMap((r) => {
              const match = /^\/v1\/apps\/([^/]+)\/machines$/.exec(r.path)
              return match === null ? [] : [match[1]!]
            }),
          )
        }
      }).pipe(
        Effect.provide(
          layerMonitor(envFor(fly, discord, ["acme", "personal"])),
        ),
      )
      return { polled, requests, discord }
    })

  it("shares the machine lists between orgs, each at least one", () => {
    assert.deepStrictEqual(fairShares([10, 3], 5), [3, 2])
    assert.deepStrictEqual(fairShares([10, 1], 5), [4, 1])
    assert.deepStrictEqual(fairShares([0, 7, 2], 6), [0, 4, 2])
    assert.deepStrictEqual(fairShares([4, 4, 4], 2), [1, 1, 1])
    assert.deepStrictEqual(fairShares([4, 2], Infinity), [4, 2])
  })

  it.scoped("reaches every app of both orgs within four passes", () =>
    Effect.gen(function* () {
      // 12 requests: two app lists, five kept for full event lists, so
      // five machine lists, three for acme and two for personal.
      const { polled, requests, discord } = yield* passes(12, 4)
      assert.deepStrictEqual(requests, [7, 7, 7, 7])
      assert.deepStrictEqual(
        polled.map((apps) => [...apps].sort()),
        [
          ["a0", "a1", "a2", "p0", "p1"],
          ["a3", "a4", "a5", "p0", "p2"],
          ["a6", "a7", "a8", "p1", "p2"],
          ["a0", "a1", "a9", "p0", "p1"],
        ],
      )
      assert.deepStrictEqual([...new Set(polled.flat())].sort(), [
        ...Array.from({ length: 10 }, (_, i) => `a${i}`),
        "p0",
        "p1",
        "p2",
      ])
      assert.deepStrictEqual(greetings(discord), [
        "Now watching org `acme`: 10 apps (3 listed so far), 3 machines, 0 running. " +
          "Machine start, stop and exit events from now on will be posted here.",
        "Now watching org `personal`: 3 apps (2 listed so far), 2 machines, 0 running. " +
          "Machine start, stop and exit events from now on will be posted here.",
      ])
    }),
  )

  it.scoped("lets orgs take turns when one budget cannot list them all", () =>
    Effect.gen(function* () {
      // 8 requests fit one org a pass: its app list and two machine lists.
      const { polled, requests } = yield* passes(8, 4)
      assert.deepStrictEqual(requests, [3, 3, 3, 3])
      assert.deepStrictEqual(
        polled.map((apps) => [...apps].sort()),
        [
          ["a0", "a1"],
          ["p0", "p1"],
          ["a2", "a3"],
          ["p0", "p2"],
        ],
      )
    }),
  )
})

describe("FLY_ORGS", () => {
  const read = (env: Record<string, string>) =>
    Effect.either(FlySettings).pipe(
      Effect.withConfigProvider(
        ConfigProvider.fromMap(new Map(Object.entries(env))),
      ),
      Effect.map(Either.mapLeft(describeConfigError)),
    )

  it.effect("reads each org and its token, in the order given", () =>
    Effect.gen(function* () {
      const settings = yield* read({
        FLY_ORGS: JSON.stringify({
          acme: TOKENS.acme,
          personal: TOKENS.personal,
        }),
      })
      assert.isTrue(Either.isRight(settings))
      const orgs = Either.getOrThrow(settings).orgs
      assert.deepStrictEqual(
        orgs.map((org) => [org.slug, Redacted.value(org.token)]),
        [
          ["acme", TOKENS.acme],
          ["personal", TOKENS.personal],
        ],
      )
      const single = yield* read({
        FLY_API_TOKEN: TOKENS.acme,
        FLY_ORG_SLUG: "acme",
      })
      assert.deepStrictEqual(
        Either.getOrThrow(single).orgs.map((org) => [
          org.slug,
          Redacted.value(org.token),
        ]),
        [["acme", TOKENS.acme]],
      )
    }),
  )

  it.effect("refuses FLY_ORGS next to FLY_API_TOKEN, naming both", () =>
    Effect.gen(function* () {
      assert.deepStrictEqual(
        yield* read({
          FLY_ORGS: JSON.stringify({ acme: TOKENS.acme }),
          FLY_API_TOKEN: TOKENS.personal,
        }),
        Either.left([
          "FLY_ORGS: invalid: set either FLY_ORGS or FLY_API_TOKEN with FLY_ORG_SLUG, not both; FLY_API_TOKEN is set too",
        ]),
      )
      assert.deepStrictEqual(
        yield* read({
          FLY_ORGS: JSON.stringify({ acme: TOKENS.acme }),
          FLY_API_TOKEN: TOKENS.personal,
          FLY_ORG_SLUG: "personal",
        }),
        Either.left([
          "FLY_ORGS: invalid: set either FLY_ORGS or FLY_API_TOKEN with FLY_ORG_SLUG, not both; FLY_API_TOKEN and FLY_ORG_SLUG are set too",
        ]),
      )
    }),
  )

  it.effect("names FLY_ORGS when it is invalid, never quoting it", () =>
    Effect.gen(function* () {
      const cases: ReadonlyArray<readonly [string, string]> = [
        [
          `{"acme": "${TOKENS.acme}"`,
          'not valid JSON (value not shown: it holds tokens); expected an object from org slug to token, such as {"acme": "FlyV1 fm2_…", "personal": "fo1_…"}',
        ],
        [
          JSON.stringify([TOKENS.acme]),
          'expected a JSON object from org slug to token, such as {"acme": "FlyV1 fm2_…", "personal": "fo1_…"} (value not shown: it holds tokens)',
        ],
        [
          "{}",
          'expected at least one org, such as {"acme": "FlyV1 fm2_…", "personal": "fo1_…"}',
        ],
        [
          JSON.stringify({ acme: TOKENS.acme, personal: 42 }),
          "org 2: the token must be a JSON string (value not shown: it is a secret)",
        ],
        [
          JSON.stringify({ [TOKENS.acme]: "acme" }),
          "org 1: the key must be an org slug as `fly orgs list` shows it (lowercase letters, digits and hyphens), the value its token (not shown: it is a secret)",
        ],
        [
          JSON.stringify({ acme: `${TOKENS.acme}\n` + "x" }),
          "org 1: the token contains a line break or control character (value not shown: it is a secret)",
        ],
        [JSON.stringify({ acme: " " }), "org 1: the token is empty"],
        [
          JSON.stringify({ acme: TOKENS.acme, " acme": TOKENS.lab }),
          "org 2: the same org is listed twice",
        ],
      ]
      for (const [value, problem] of cases) {
        const result = yield* read({ FLY_ORGS: value })
        assert.deepStrictEqual(
          result,
          Either.left([`FLY_ORGS: invalid: ${problem}`]),
        )
        assert.notInclude(JSON.stringify(result), "secret-macaroon")
      }
    }),
  )

  it.effect("still names both single-org variables when nothing is set", () =>
    Effect.gen(function* () {
      assert.deepStrictEqual(
        yield* read({ FLY_ORGS: " " }),
        Either.left([
          "FLY_API_TOKEN: missing (required, or FLY_ORGS for several orgs)",
          "FLY_ORG_SLUG: missing (required)",
        ]),
      )
    }),
  )
})
