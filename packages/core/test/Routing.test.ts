import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import type { FakeDiscord } from "@flymon/testkit/FakeDiscord"
import {
  Clock,
  ConfigProvider,
  Duration,
  Effect,
  Either,
  HashMap,
  Logger,
  LogLevel,
  Redacted,
  Schedule,
  TestClock,
} from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { deliverPending, deliverReport } from "../src/Delivery.ts"
import { footerKeys } from "../src/DiscordMessage.ts"
import { runGuards } from "../src/Guards.ts"
import { EventStore, type NewEvent } from "../src/EventStore.ts"
import type { Notifier } from "../src/Notifier.ts"
import type { RetryPolicy, RetryPolicyShape } from "../src/RetryPolicy.ts"
import { parseRoutes, routeFor } from "../src/Routes.ts"
import { CoreSettings, describeConfigError } from "../src/Settings.ts"
import { simulate, startDiscord } from "./simulate.ts"
import { FLY_TOKEN, layerMonitor, layerSqliteAt, ORG } from "./support.ts"

const T0 = Date.UTC(2026, 11, 1, 9, 0)
const MINUTE = 60_000

const patient: RetryPolicyShape = {
  fly: Schedule.recurs(2),
  discord: Schedule.recurs(2),
  longestRateLimitWait: Duration.minutes(2),
  requestTimeout: Duration.days(1),
}

/** The Worker's patience: a wait longer than 5 s is left for a later pass. */
const brief: RetryPolicyShape = {
  ...patient,
  longestRateLimitWait: Duration.seconds(5),
}

const webhooks = (discord: FakeDiscord) => ({
  web: discord.webhookUrl("100", "web-team-token"),
  staging: discord.webhookUrl("200", "staging-token"),
  fallback: discord.webhookUrl("300", "default-token"),
})

const routesFor = (discord: FakeDiscord) => {
  const urls = webhooks(discord)
  return JSON.stringify([
    { name: "web team", apps: ["web-*", "shop"], webhook: urls.web },
    { name: "staging", orgs: "acme-staging", webhook: urls.staging },
  ])
}

const envFor = (discord: FakeDiscord, extra: Record<string, string> = {}) => ({
  FLY_API_TOKEN: FLY_TOKEN,
  FLY_ORG_SLUG: ORG,
  // Never contacted: these tests deliver what is already stored.
  FLY_API_BASE_URL: "http://127.0.0.1:9",
  DISCORD_WEBHOOK_URL: webhooks(discord).fallback,
  DISCORD_ROUTES: routesFor(discord),
  DIGEST_HOUR: "off",
  ...extra,
})

/** Stores one undelivered start event per entry, each of its own machine. */
const addEvents = (
  entries: ReadonlyArray<{
    readonly key: string
    readonly app: string
    readonly org: string
    readonly machineId?: string
  }>,
) =>
  Effect.gen(function* () {
    const store = yield* EventStore
    const now = yield* Clock.currentTimeMillis
    const events = entries.map((entry, i): NewEvent => ({
      key: entry.key,
      machineId: entry.machineId ?? `m-${entry.key}`,
      app: entry.app,
      org: entry.org,
      type: i % 2 === 0 ? "start" : "exit",
      status: i % 2 === 0 ? "started" : "stopped",
      source: "user",
      timestamp: now - entries.length + i,
      exit:
        i % 2 === 0
          ? undefined
          : {
              exitCode: 1,
              oomKilled: false,
              requestedStop: false,
              restartCount: null,
              error: null,
            },
    }))
    for (const event of events)
      yield* store.saveMachine(
        {
          id: event.machineId,
          app: event.app,
          org: event.org,
          name: `vm-${event.machineId}`,
          region: "ams",
          size: "shared-cpu-1x",
          state: "started",
          lastEventKey: null,
          lastEventAt: null,
          guest: undefined,
        },
        now,
      )
    yield* store.insertEvents(events, { now, baseline: false })
  })

const addNotice = (key: string, target: { app?: string; org?: string }) =>
  Effect.gen(function* () {
    const store = yield* EventStore
    yield* store.addNotice({
      key,
      kind: "test",
      createdAt: yield* Clock.currentTimeMillis,
      silent: false,
      embed: { title: key, color: 0, fields: [], footer: { text: key } },
      ...target,
    })
  })

/** Per webhook id, the footer keys of each message it received. */
const postedTo = (discord: FakeDiscord, id: string) =>
  discord.requests
    .filter((request) => request.path.split("/")[3] === id)
    .map((request) =>
      (
        (request.body as { embeds?: Array<{ footer: { text: string } }> })
          .embeds ?? []
      ).flatMap((embed) =>
        footerKeys(embed.footer.text).length > 0
          ? footerKeys(embed.footer.text)
          : [embed.footer.text],
      ),
    )

const undelivered = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  return yield* sql<{
    key: string
    claimed_until: number | null
  }>`SELECT key, claimed_until FROM events WHERE notified_at IS NULL
     ORDER BY key`
})

const readSettings = (env: Record<string, string>) =>
  Effect.either(
    CoreSettings.pipe(
      Effect.withConfigProvider(
        ConfigProvider.fromMap(new Map(Object.entries(env))),
      ),
    ),
  )

describe("DISCORD_ROUTES", () => {
  const base = {
    FLY_API_TOKEN: FLY_TOKEN,
    FLY_ORG_SLUG: ORG,
  }
  const secret = "https://discord.test/api/webhooks/1/route-secret"

  it.effect(
    "is read at start-up, with DISCORD_WEBHOOK_URL as the default",
    () =>
      Effect.gen(function* () {
        const settings = yield* readSettings({
          ...base,
          DISCORD_WEBHOOK_URL: "https://discord.test/api/webhooks/9/fallback",
          DISCORD_ROUTES: JSON.stringify([
            { name: "web team", apps: ["web-*"], webhook: secret },
            { orgs: [ORG], webhook: `${secret}2` },
          ]),
        })
        assert.deepStrictEqual(
          Either.map(settings, ([, discord]) =>
            discord.routes.map((route) => [
              route.name,
              route.apps,
              route.orgs,
              Redacted.value(route.webhook),
            ]),
          ),
          Either.right([
            ["web team", ["web-*"], undefined, secret],
            ["route 2", undefined, [ORG], `${secret}2`],
            [
              "default",
              undefined,
              undefined,
              "https://discord.test/api/webhooks/9/fallback",
            ],
          ]),
        )
      }),
  )

  it.effect("a route for every app may replace DISCORD_WEBHOOK_URL", () =>
    Effect.gen(function* () {
      const settings = yield* readSettings({
        ...base,
        DISCORD_ROUTES: JSON.stringify([
          { apps: "web-*", webhook: secret },
          { name: "everything else", webhook: `${secret}3` },
        ]),
      })
      assert.deepStrictEqual(
        Either.map(settings, ([, discord]) => [
          discord.routes.map((route) => route.name),
          Redacted.value(discord.webhookUrl),
        ]),
        Either.right([["route 1", "everything else"], `${secret}3`]),
      )
    }),
  )

  it.effect("names the variable and never echoes a webhook", () =>
    Effect.gen(function* () {
      const problems = (env: Record<string, string>) =>
        readSettings({ ...base, ...env }).pipe(
          Effect.map(Either.mapLeft(describeConfigError)),
          Effect.map(Either.getLeft),
        )
      const fallback = { DISCORD_WEBHOOK_URL: `${secret}-fallback` }
      const cases: ReadonlyArray<[Record<string, string>, string]> = [
        [
          { ...fallback, DISCORD_ROUTES: `[{"webhook": "${secret}"` },
          "DISCORD_ROUTES: invalid: not valid JSON (value not shown: it holds " +
            'webhook URLs); expected [{"apps": ["web-*"], "webhook": ' +
            '"https://discord.com/api/webhooks/…"}, {"webhook": ' +
            '"https://discord.com/api/webhooks/…"}]',
        ],
        [
          { ...fallback, DISCORD_ROUTES: `{"webhook": "${secret}"}` },
          "DISCORD_ROUTES: invalid: expected a JSON array of routes such as " +
            '[{"apps": ["web-*"], "webhook": "https://discord.com/api/webhooks/…"}, ' +
            '{"webhook": "https://discord.com/api/webhooks/…"}]',
        ],
        [
          {
            ...fallback,
            DISCORD_ROUTES: JSON.stringify([
              { apps: "web-*", webhook: "discord.com/route-secret" },
            ]),
          },
          'DISCORD_ROUTES: invalid: route 1: "webhook" must be an http(s) URL ' +
            "(value not shown: it is a secret)",
        ],
        [
          {
            ...fallback,
            DISCORD_ROUTES: JSON.stringify([{ app: "web-*", webhook: secret }]),
          },
          'DISCORD_ROUTES: invalid: route 1: unknown key "app"; known: name, ' +
            "apps, orgs, webhook",
        ],
        [
          {
            ...fallback,
            DISCORD_ROUTES: JSON.stringify([{ apps: [], webhook: secret }]),
          },
          'DISCORD_ROUTES: invalid: route 1: "apps" must be an app name glob ' +
            "or a list of them",
        ],
        [
          {
            DISCORD_ROUTES: JSON.stringify([
              { webhook: secret },
              { apps: "web-*", webhook: secret },
            ]),
          },
          "DISCORD_ROUTES: invalid: route 1 matches every app, so the routes " +
            'after it would never be used: give it "apps" or "orgs", or move ' +
            "it last",
        ],
        [
          {
            ...fallback,
            DISCORD_ROUTES: JSON.stringify([{ apps: "web-*" }]),
          },
          'DISCORD_ROUTES: invalid: route 1: "webhook" is missing',
        ],
        [
          {
            ...fallback,
            DISCORD_ROUTES: JSON.stringify([
              { apps: ["*"], webhook: secret },
              { apps: "web-*", webhook: secret },
            ]),
          },
          "DISCORD_ROUTES: invalid: route 2 can never match: route 1 takes " +
            "every app first",
        ],
        [
          {
            ...fallback,
            DISCORD_ROUTES: JSON.stringify([
              { orgs: ["acme-staging"], webhook: secret },
            ]),
          },
          'DISCORD_ROUTES: invalid: route 1 names org "acme-staging", which ' +
            "is not watched (watched: acme)",
        ],
        [
          {
            DISCORD_ROUTES: JSON.stringify([
              { apps: "web-*", webhook: secret },
            ]),
          },
          "DISCORD_WEBHOOK_URL: missing (required, or a last route in DISCORD_ROUTES for every app)",
        ],
        [
          {
            ...fallback,
            DISCORD_ROUTES: JSON.stringify([{ webhook: secret }]),
          },
          "DISCORD_WEBHOOK_URL: invalid: not used: the last route of " +
            "DISCORD_ROUTES already takes every app; remove one of the two",
        ],
      ]
      for (const [env, line] of cases) {
        const found = yield* problems(env)
        assert.deepStrictEqual(found._tag === "Some" ? found.value : [], [line])
        assert.notInclude(line, "route-secret")
      }
    }),
  )
})

describe("routeFor", () => {
  const routes = Either.getOrThrow(
    parseRoutes(
      JSON.stringify([
        { name: "web", apps: ["web-*", "shop"], webhook: "https://a.test/1" },
        {
          name: "staging web",
          apps: "stg-?",
          orgs: ["acme-staging"],
          webhook: "https://a.test/2",
        },
        { name: "staging", orgs: "acme-staging", webhook: "https://a.test/3" },
        { name: "rest", webhook: "https://a.test/4" },
      ]),
    ),
  )
  it("takes the first route whose apps and orgs both match", () => {
    const name = (app?: string, org?: string) =>
      routeFor(routes, { app, org }).name
    assert.deepStrictEqual(
      [
        name("web-shop", "acme"),
        name("shop", "acme-staging"),
        name("shops", "acme"),
        name("stg-1", "acme-staging"),
        name("stg-1", "acme"),
        name("stg-10", "acme-staging"),
        name(undefined, "acme-staging"),
        name(undefined, undefined),
        name("web-shop", undefined),
      ],
      [
        "web",
        "web",
        "rest",
        "staging web",
        "rest",
        "staging",
        "staging",
        "rest",
        "web",
      ],
    )
  })
})

describe("delivery over routes", () => {
  it.scoped("each alert goes to its app's route; notices too", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const discord = yield* startDiscord()
      const sent = yield* Effect.gen(function* () {
        yield* addEvents([
          { key: "e1", app: "web-shop", org: "acme" },
          { key: "e2", app: "api", org: "acme-staging" },
          { key: "e3", app: "db", org: "acme" },
          { key: "e4", app: "web-blog", org: "acme-staging" },
        ])
        yield* addNotice("n1", { app: "web-shop", org: "acme" })
        yield* addNotice("n2", {})
        yield* addNotice("n3", { org: "acme-staging" })
        return yield* simulate(deliverPending)
      }).pipe(Effect.provide(layerMonitor(envFor(discord), patient)))
      assert.strictEqual(sent, 7)
      assert.deepStrictEqual(
        ["100", "200", "300"].map((id) => postedTo(discord, id)),
        [
          [["e1", "e4"], ["n1"]],
          [["e2"], ["n3"]],
          [["e3"], ["n2"]],
        ],
      )
      assert.deepStrictEqual(
        discord.messages.map((m) => m.allowed_mentions),
        Array(6).fill({ parse: [] }),
      )
    }),
  )

  it.scoped(
    "a deleted route's webhook stops that route only; its alerts wait",
    () =>
      Effect.gen(function* () {
        yield* TestClock.setTime(T0)
        const discord = yield* startDiscord()
        discord.deleteWebhook("100")
        const lines: Array<string> = []
        const logger = Logger.make(({ logLevel, message, annotations }) => {
          const notes = HashMap.toEntries(annotations)
            .map(([key, value]) => ` ${key}=${String(value)}`)
            .join("")
          lines.push(`${logLevel.label} ${String(message)}${notes}`)
        })
        const [first, second, rows] = yield* Effect.gen(function* () {
          yield* addEvents([
            { key: "e1", app: "web-shop", org: "acme" },
            { key: "e2", app: "api", org: "acme-staging" },
            { key: "e3", app: "db", org: "acme" },
            { key: "e4", app: "shop", org: "acme" },
          ])
          const first = yield* simulate(deliverReport)
          yield* addEvents([{ key: "e5", app: "db", org: "acme" }])
          const second = yield* simulate(deliverReport)
          return [first, second, yield* undelivered] as const
        }).pipe(
          Effect.provide(Logger.replace(Logger.defaultLogger, logger)),
          Logger.withMinimumLogLevel(LogLevel.Error),
          Effect.provide(layerMonitor(envFor(discord), patient)),
        )
        // What went out is counted, next to the route that failed.
        assert.deepStrictEqual(
          [first, second].map((outcome) => [
            outcome.sent,
            outcome.failure?.reason,
          ]),
          [
            [2, "WebhookGone"],
            [1, "WebhookGone"],
          ],
        )
        // One request to the dead webhook, ever; the others deliver.
        assert.deepStrictEqual(
          ["100", "200", "300"].map((id) => postedTo(discord, id)),
          [[["e1", "e4"]], [["e2"]], [["e3"], ["e5"]]],
        )
        assert.deepStrictEqual(rows, [
          { key: "e1", claimed_until: null },
          { key: "e4", claimed_until: null },
        ])
        assert.deepStrictEqual(lines, [
          "ERROR Discord refused the webhook: no more alerts will be sent " +
            "until the webhook of web team in DISCORD_ROUTES is fixed; alerts " +
            "are kept and wait in the database (the webhook was deleted) " +
            "error=Discord WebhookGone (HTTP 404): Unknown Webhook (code 10015)",
        ])
        assert.notInclude(lines.join("\n"), "web-team-token")
      }),
  )
})

describe("notices about one app", () => {
  it.scoped("a machine running too long is announced on its app's route", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const discord = yield* startDiscord()
      yield* Effect.gen(function* () {
        const store = yield* EventStore
        yield* addEvents([{ key: "e1", app: "web-shop", org: "acme" }])
        yield* store.openRun("m-e1", "web-shop", T0 - 5 * 60 * MINUTE)
        yield* runGuards
        assert.strictEqual(yield* simulate(deliverPending), 2)
      }).pipe(Effect.provide(layerMonitor(envFor(discord), patient)))
      const key = `runaway m-e1 ${T0 - 5 * 60 * MINUTE} #0`
      assert.deepStrictEqual(
        ["100", "200", "300"].map((id) => postedTo(discord, id)),
        [[["e1"], [key]], [], []],
      )
    }),
  )
})

describe("several events of one machine", () => {
  it.scoped("share one embed, a line each, oldest first", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const discord = yield* startDiscord()
      yield* Effect.gen(function* () {
        yield* addEvents([
          { key: "k1", app: "db", org: "acme", machineId: "m1" },
          { key: "k2", app: "db", org: "acme", machineId: "m1" },
          { key: "k3", app: "db", org: "acme", machineId: "m2" },
          { key: "k4", app: "db", org: "acme", machineId: "m1" },
        ])
        assert.strictEqual(yield* simulate(deliverPending), 4)
      }).pipe(Effect.provide(layerMonitor(envFor(discord), patient)))
      assert.deepStrictEqual(postedTo(discord, "300"), [
        ["k1", "k2", "k4", "k3"],
      ])
      const [grouped, single] = discord.messages[0]!.embeds!
      const at = (ms: number) => `<t:${Math.floor(ms / 1000)}:T>`
      assert.deepStrictEqual(
        {
          title: grouped.title,
          description: grouped.description,
          color: grouped.color,
          fields: grouped.fields.map((f: { name: string }) => f.name),
          footer: grouped.footer.text,
        },
        {
          title: "vm\\-m1: 3 events, crashed with exit code 1 last",
          description: [
            `${at(T0 - 1)} **started** · by user · ≈ $0.0027/h while started ` +
              "(unknown size, priced as shared\\-cpu\\-1x; baseline price " +
              "for region ams)",
            `${at(T0 - 1)} **crashed with exit code 1** · by user`,
            `${at(T0 - 1)} **crashed with exit code 1** · by user`,
          ].join("\n"),
          color: 0xe74c3c,
          fields: ["App", "Machine", "Region", "Size"],
          footer: "events k1 k2 k4",
        },
      )
      assert.strictEqual(single.title, "vm\\-m2 started")
      assert.strictEqual(single.footer.text, "event k3")
    }),
  )
})

describe("a pause every webhook obeys", () => {
  it.scoped(
    "outlives the process: a new invocation does not ask Discord early",
    () =>
      Effect.gen(function* () {
        yield* TestClock.setTime(T0)
        const discord = yield* startDiscord()
        const dir = mkdtempSync(join(tmpdir(), "flymon-pause-"))
        yield* Effect.addFinalizer(() =>
          Effect.sync(() => rmSync(dir, { recursive: true, force: true })),
        )
        const file = join(dir, "monitor.db")
        // A fresh set of services on the same database: one Worker invocation.
        const invocation = <A, E>(
          effect: Effect.Effect<A, E, EventStore | Notifier | RetryPolicy>,
        ) =>
          simulate(effect).pipe(
            Effect.provide(
              layerMonitor(
                envFor(discord, { DISCORD_ROUTES: "" }),
                brief,
                layerSqliteAt(file),
              ),
            ),
          )
        discord.respondNext({ status: 429, body: "error code: 1015" })
        const outcomes: Array<string> = []
        const record = (outcome: Either.Either<number, unknown>) =>
          outcomes.push(
            Either.isRight(outcome)
              ? `sent ${outcome.right}`
              : (outcome.left as { reason: string }).reason,
          )
        yield* invocation(
          Effect.zipRight(
            addEvents([{ key: "e1", app: "db", org: "acme" }]),
            Effect.either(deliverPending),
          ),
        ).pipe(Effect.map(record))
        for (const minute of [5, 10, 15]) {
          yield* TestClock.setTime(T0 + minute * MINUTE)
          yield* invocation(Effect.either(deliverPending)).pipe(
            Effect.map(record),
          )
        }
        assert.deepStrictEqual(outcomes, [
          "Banned",
          "Banned",
          "Banned",
          "sent 1",
        ])
        assert.deepStrictEqual(
          discord.requests.map((request) => [
            request.status,
            (request.at - T0) / MINUTE,
          ]),
          [
            [429, 0],
            [200, 15],
          ],
        )
      }),
  )
})
