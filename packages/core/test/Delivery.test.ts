import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { type DiscordMessage, FakeDiscord } from "@flymon/testkit/FakeDiscord"
import { FakeFly } from "@flymon/testkit/FakeFly"
import {
  Clock,
  ConfigProvider,
  Duration,
  Effect,
  Either,
  Fiber,
  HashMap,
  Logger,
  LogLevel,
  Metric,
  Random,
  Redacted,
  Schedule,
  TestClock,
} from "effect"
import { deliverPending } from "../src/Delivery.ts"
import { footerKeys, payload } from "../src/DiscordMessage.ts"
import { EventStore } from "../src/EventStore.ts"
import * as Metrics from "../src/Metrics.ts"
import { runPass } from "../src/Monitor.ts"
import { DiscordError, Notifier } from "../src/Notifier.ts"
import type { RetryPolicyShape } from "../src/RetryPolicy.ts"
import { CoreSettings, describeConfigError } from "../src/Settings.ts"
import { simulate, startDiscord, untilWaiting } from "./simulate.ts"
import { FLY_TOKEN, layerMonitor, ORG } from "./support.ts"

// Discord delivery on simulated time: the TestClock drives the monitor, and
// the fake Discord's rate-limit buckets and request times follow the same
// clock, over real HTTP and a real SQLite database.

const T0 = Date.UTC(2026, 11, 1, 9, 0)
const SECOND = 1000
const MINUTE = 60_000

/** Like the Bun runner: patient, but without backoff delays. */
const patient: RetryPolicyShape = {
  fly: Schedule.recurs(2),
  discord: Schedule.recurs(6),
  longestRateLimitWait: Duration.minutes(2),
  // Far beyond any wait here, so a timeout never fires by accident.
  requestTimeout: Duration.days(1),
}

/** Like the Worker: a 429 asking for more than 5 s is left for later. */
const brief: RetryPolicyShape = {
  ...patient,
  discord: Schedule.recurs(2),
  longestRateLimitWait: Duration.seconds(5),
}

const envFor = (discord: FakeDiscord, extra: Record<string, string> = {}) => ({
  FLY_API_TOKEN: FLY_TOKEN,
  FLY_ORG_SLUG: ORG,
  // Never contacted: these tests deliver what is already stored.
  FLY_API_BASE_URL: "http://127.0.0.1:9",
  DISCORD_WEBHOOK_URL: discord.webhookUrl(),
  DIGEST_HOUR: "off",
  ...extra,
})

/** Logs as `LEVEL message key=value…`, for asserting what a person reads. */
const captureLogs = () => {
  const lines: Array<string> = []
  const logger = Logger.make(({ logLevel, message, annotations }) => {
    const text = (Array.isArray(message) ? message : [message]).join(" ")
    const notes = HashMap.toEntries(annotations)
      .map(([key, value]) => ` ${key}=${String(value)}`)
      .join("")
    lines.push(`${logLevel.label} ${text}${notes}`)
  })
  const capture = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
    effect.pipe(
      Effect.provide(Logger.replace(Logger.defaultLogger, logger)),
      Logger.withMinimumLogLevel(LogLevel.Info),
    )
  return { lines, capture }
}

/**
 * Stores `count` undelivered events a millisecond apart, each of its own
 * machine (several events of one machine would share an embed).
 */
const addEvents = (count: number, prefix = "ev") =>
  Effect.gen(function* () {
    const store = yield* EventStore
    const now = yield* Clock.currentTimeMillis
    const events = Array.from({ length: count }, (_, i) => ({
      key: `${prefix}-${String(i).padStart(3, "0")}`,
      machineId: `${prefix}-m${i}`,
      app: "shop",
      type: i % 2 === 0 ? "start" : "stop",
      status: i % 2 === 0 ? "started" : "stopped",
      source: "user",
      timestamp: now - count + i,
      exit: undefined,
    }))
    for (const event of events)
      yield* store.saveMachine(
        {
          id: event.machineId,
          app: "shop",
          name: "web-1",
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
    return events.map((event) => event.key)
  })

const eventRows = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  return yield* sql<{
    key: string
    notified_at: number | null
    claimed_until: number | null
    delivery_error: string | null
  }>`SELECT key, notified_at, claimed_until, delivery_error
     FROM events ORDER BY key`
})

/** The DiscordError `effect` fails with; any other outcome is a defect. */
const discordFailure = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.flip(effect).pipe(
    Effect.flatMap((error) =>
      error instanceof DiscordError
        ? Effect.succeed(error)
        : Effect.dieMessage(`expected a DiscordError, got ${String(error)}`),
    ),
  )

const reasonOf = (error: unknown) =>
  error instanceof DiscordError ? error.reason : String(error)

const bodyOf = (request: { body: unknown }) => request.body as DiscordMessage

/** The footer keys each request carried. */
const footersPerRequest = (discord: FakeDiscord) =>
  discord.requests.map((request) =>
    (bodyOf(request).embeds ?? []).map(
      (embed: { footer: { text: string } }) => embed.footer.text,
    ),
  )

const offsets = (discord: FakeDiscord) =>
  discord.requests.map((request) => request.at - T0)

const failedCount = (reason: string) =>
  Metric.value(Metric.tagged(Metrics.alertsFailed, "reason", reason)).pipe(
    Effect.map((state) => state.count as number),
  )

/** Jitter is 125 ms with this Random: a fixed 0.5 of the 250 ms. */
const JITTER = 125
const fixedJitter = Effect.withRandom(Random.fixed([0.5]))

describe("pacing", () => {
  it.scoped("one request in flight per webhook", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const discord = yield* startDiscord()
      // Slow answers (real time), so overlapping requests would show.
      for (let i = 0; i < 4; i++)
        discord.respondNext({ status: 200, body: { id: "1" }, delayMs: 50 })
      const other = Redacted.make(discord.webhookUrl("2", "other-token"))
      yield* Effect.gen(function* () {
        const notifier = yield* Notifier
        yield* simulate(
          Effect.all(
            [
              notifier.send(payload({ content: "a" })),
              notifier.send(payload({ content: "b" })),
              notifier.send(payload({ content: "c" }), { webhookUrl: other }),
            ],
            { concurrency: "unbounded" },
          ),
        )
      }).pipe(Effect.provide(layerMonitor(envFor(discord), patient)))
      const seen = (webhook: string) =>
        discord.requests
          .filter((r) => r.path.split("/")[3] === webhook)
          .map((r) => [bodyOf(r).content, r.unanswered])
      // The second message to webhook 1 waited for the first's answer.
      assert.deepStrictEqual(seen("1234567890"), [
        ["a", 0],
        ["b", 0],
      ])
      assert.deepStrictEqual(seen("2"), [["c", 0]])
    }),
  )

  it.scoped(
    "a burst of 300 events: 30 messages, paced by the headers and 25 a minute, no 429",
    () =>
      Effect.gen(function* () {
        yield* TestClock.setTime(T0)
        const discord = yield* startDiscord({ enforceRateLimit: true })
        const keys = yield* Effect.gen(function* () {
          const keys = yield* addEvents(300)
          assert.strictEqual(yield* simulate(deliverPending), 300)
          assert.deepStrictEqual(
            (yield* eventRows).filter((row) => row.notified_at === null),
            [],
          )
          return keys
        }).pipe(Effect.provide(layerMonitor(envFor(discord), patient)))
        assert.deepStrictEqual(
          discord.requests.map((r) => r.status),
          Array(30).fill(200),
        )
        // Five per 2 s bucket, as Remaining 0 and Reset-After 2.000 ask,
        // until 25 in the minute; the next five once that minute is over.
        assert.deepStrictEqual(
          offsets(discord),
          [0, 2, 4, 6, 8, 60].flatMap((s) => Array(5).fill(s * SECOND)),
        )
        const footers = footersPerRequest(discord)
        assert.deepStrictEqual(
          footers.map((f) => f.length),
          Array(30).fill(10),
        )
        assert.deepStrictEqual(
          footers.flat(),
          keys.map((key) => `event ${key}`),
        )
      }),
  )

  it.scoped(
    "with the Worker's short wait, pacing leaves the rest for the next pass",
    () =>
      Effect.gen(function* () {
        yield* TestClock.setTime(T0)
        const discord = yield* startDiscord({ enforceRateLimit: true })
        yield* Effect.gen(function* () {
          yield* addEvents(300)
          // Pacing is not a failure: the pass goes on, the rest waits.
          assert.strictEqual(yield* simulate(deliverPending), 250)
          yield* TestClock.setTime(T0 + 5 * MINUTE)
          assert.strictEqual(yield* simulate(deliverPending), 50)
        }).pipe(Effect.provide(layerMonitor(envFor(discord), brief)))
        assert.deepStrictEqual(offsets(discord), [
          ...[0, 2, 4, 6, 8].flatMap((s) => Array(5).fill(s * SECOND)),
          ...Array(5).fill(5 * MINUTE),
        ])
        assert.strictEqual(new Set(footersPerRequest(discord).flat()).size, 300)
      }),
  )
})

describe("429", () => {
  const rateLimited = (retryAfter: number, headers = {}) => ({
    status: 429,
    body: {
      message: "You are being rate limited.",
      retry_after: retryAfter,
      global: false,
    },
    headers: {
      "X-RateLimit-Limit": "5",
      "X-RateLimit-Remaining": "0",
      "X-RateLimit-Reset-After": String(retryAfter),
      "X-RateLimit-Scope": "user",
      ...headers,
    },
  })

  it.scoped("retry_after 0.3 s: waits 0.3 s plus jitter, then delivers", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const discord = yield* startDiscord()
      discord.respondNext(rateLimited(0.3))
      yield* Effect.gen(function* () {
        yield* addEvents(1)
        assert.strictEqual(yield* simulate(deliverPending), 1)
        assert.isNotNull((yield* eventRows)[0]!.notified_at)
      }).pipe(Effect.provide(layerMonitor(envFor(discord), patient)))
      assert.deepStrictEqual(
        discord.requests.map((r) => [r.status, r.at - T0]),
        [
          [429, 0],
          [200, 300 + JITTER],
        ],
      )
    }).pipe(fixedJitter),
  )

  it.scoped("the larger of retry_after and Retry-After is waited", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const discord = yield* startDiscord()
      // Discord rounds the header up to whole seconds.
      discord.respondNext(rateLimited(0.3, { "Retry-After": "1" }))
      yield* Effect.gen(function* () {
        yield* addEvents(1)
        yield* simulate(deliverPending)
      }).pipe(Effect.provide(layerMonitor(envFor(discord), patient)))
      assert.deepStrictEqual(offsets(discord), [0, 1000 + JITTER])
    }).pipe(fixedJitter),
  )

  it.scoped("retry_after 45 s within a 60 s policy: waited on the clock", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const discord = yield* startDiscord()
      discord.respondNext(rateLimited(45, { "Retry-After": "45" }))
      const policy = { ...patient, longestRateLimitWait: Duration.seconds(60) }
      yield* Effect.gen(function* () {
        yield* addEvents(1)
        assert.strictEqual(yield* simulate(deliverPending), 1)
      }).pipe(Effect.provide(layerMonitor(envFor(discord), policy)))
      assert.deepStrictEqual(
        discord.requests.map((r) => [r.status, r.at - T0]),
        [
          [429, 0],
          [200, 45 * SECOND + JITTER],
        ],
      )
    }).pipe(fixedJitter),
  )

  it.scoped(
    "retry_after 45 s with the Worker's 5 s: left for the next pass",
    () =>
      Effect.gen(function* () {
        yield* TestClock.setTime(T0)
        const discord = yield* startDiscord()
        discord.respondNext(rateLimited(45, { "Retry-After": "45" }))
        yield* Effect.gen(function* () {
          yield* addEvents(1)
          const failed = yield* discordFailure(simulate(deliverPending))
          assert.strictEqual(failed.reason, "RateLimited")
          assert.deepStrictEqual(
            (yield* eventRows).map((r) => [r.notified_at, r.claimed_until]),
            [[null, null]],
          )
          yield* TestClock.setTime(T0 + 5 * MINUTE)
          assert.strictEqual(yield* simulate(deliverPending), 1)
        }).pipe(Effect.provide(layerMonitor(envFor(discord), brief)))
        assert.deepStrictEqual(
          discord.requests.map((r) => [r.status, r.at - T0]),
          [
            [429, 0],
            [200, 5 * MINUTE],
          ],
        )
      }).pipe(fixedJitter),
  )

  for (const [name, body, headers] of [
    ["global: true in the body", { global: true }, {}],
    [
      "an X-RateLimit-Global header",
      { global: false },
      { "X-RateLimit-Global": "true" },
    ],
  ] as const) {
    it.scoped(`${name} pauses every webhook of the process`, () =>
      Effect.gen(function* () {
        yield* TestClock.setTime(T0)
        const discord = yield* startDiscord()
        discord.respondNext({
          status: 429,
          body: {
            message: "You are being rate limited.",
            retry_after: 3,
            ...body,
          },
          headers: {
            "Retry-After": "3",
            "X-RateLimit-Scope": "global",
            ...headers,
          },
        })
        const other = Redacted.make(discord.webhookUrl("2", "other-token"))
        yield* Effect.gen(function* () {
          const notifier = yield* Notifier
          const first = yield* Effect.fork(
            notifier.send(payload({ content: "first webhook" })),
          )
          // Once the first webhook waits out its 429, a second is asked.
          yield* untilWaiting
          yield* TestClock.adjust(Duration.seconds(1))
          yield* simulate(
            notifier.send(payload({ content: "second webhook" }), {
              webhookUrl: other,
            }),
          )
          yield* simulate(Fiber.join(first))
        }).pipe(Effect.provide(layerMonitor(envFor(discord), patient)))
        assert.sameDeepMembers(
          discord.requests.map((r) => [
            bodyOf(r).content,
            r.path.split("/")[3],
            r.status,
            r.at - T0,
          ]),
          [
            ["first webhook", "1234567890", 429, 0],
            ["first webhook", "1234567890", 200, 3000 + JITTER],
            // Asked at 1 s, sent only when the global pause is over.
            ["second webhook", "2", 200, 3000 + JITTER],
          ],
        )
      }).pipe(fixedJitter),
    )
  }

  it.scoped(
    "without rate-limit headers or retry_after: an IP ban, 15 then 30 minutes of silence",
    () =>
      Effect.gen(function* () {
        yield* TestClock.setTime(T0)
        const discord = yield* startDiscord()
        // Cloudflare's block page, twice: once at first, once right after
        // the first pause.
        discord.respondNext({ status: 429, body: "error code: 1015", times: 2 })
        const logs = captureLogs()
        const outcomes: Array<string> = []
        yield* Effect.gen(function* () {
          yield* addEvents(2)
          // A pass a minute, as the Bun runner polls; a pass that waited
          // into the next minute takes its place.
          for (let minute = 0; minute <= 50; minute++) {
            const at = T0 + minute * MINUTE
            if ((yield* Clock.currentTimeMillis) > at) continue
            yield* TestClock.setTime(at)
            const pass = yield* Effect.either(simulate(deliverPending))
            outcomes.push(
              `${minute} ` +
                (pass._tag === "Right"
                  ? `sent ${pass.right}`
                  : reasonOf(pass.left)),
            )
          }
          assert.deepStrictEqual(
            (yield* eventRows).map((r) => r.notified_at),
            [T0 + 45 * MINUTE, T0 + 45 * MINUTE],
          )
        }).pipe(
          logs.capture,
          Effect.provide(layerMonitor(envFor(discord), patient)),
        )
        assert.deepStrictEqual(
          discord.requests.map((r) => [r.status, r.at - T0]),
          [
            [429, 0],
            [429, 15 * MINUTE],
            [200, 45 * MINUTE],
          ],
        )
        // Two minutes before a pause ends, a pass waits it out (the Bun
        // runner waits up to two minutes), and asks at the very first moment.
        const minutes = (from: number, to: number, outcome: string) =>
          Array.from(
            { length: to - from + 1 },
            (_, i) => `${from + i} ${outcome}`,
          )
        assert.deepStrictEqual(outcomes, [
          ...minutes(0, 13, "Banned"),
          ...minutes(15, 42, "Banned"),
          "43 sent 2",
          ...minutes(45, 50, "sent 0"),
        ])
        assert.deepStrictEqual(
          logs.lines.filter((line) => line.startsWith("ERROR")),
          [15, 30].map(
            (minutes) =>
              "ERROR Discord is blocking this IP address (HTTP 429 without " +
              "rate-limit headers, a Cloudflare ban): no Discord request for " +
              `${minutes} min; alerts are kept error=Discord Banned (HTTP 429): ` +
              "error code: 1015; no rate-limit headers: Cloudflare is " +
              "blocking this IP",
          ),
        )
      }),
  )

  it.scoped(
    "the circuit breaker stops every send after 50 invalid answers, for 10 minutes",
    () =>
      Effect.gen(function* () {
        yield* TestClock.setTime(T0)
        const discord = yield* startDiscord()
        discord.respondNext({ ...rateLimited(0.01), times: 50 })
        const logs = captureLogs()
        // Retries without end: only the breaker stops this send.
        const policy = { ...patient, discord: Schedule.forever }
        // 10 ms plus jitter apart, 25 a minute at most.
        const spacing = 10 + JITTER
        const sentAt = (i: number) =>
          i < 25 ? i * spacing : MINUTE + (i - 25) * spacing
        const tripped = sentAt(49)
        yield* Effect.gen(function* () {
          const notifier = yield* Notifier
          const send = notifier.send(payload({ content: "hello" }))
          const error = yield* Effect.flip(simulate(send))
          assert.strictEqual(error.reason, "CircuitOpen")
          yield* TestClock.setTime(T0 + tripped + 7 * MINUTE)
          const still = yield* Effect.flip(simulate(send))
          assert.strictEqual(still.reason, "CircuitOpen")
          yield* TestClock.setTime(T0 + tripped + 10 * MINUTE)
          yield* simulate(send)
        }).pipe(
          logs.capture,
          Effect.provide(layerMonitor(envFor(discord), policy)),
        )
        assert.deepStrictEqual(
          discord.requests.map((r) => [r.status, r.at - T0]),
          [
            ...Array.from({ length: 50 }, (_, i) => [429, sentAt(i)]),
            [200, tripped + 10 * MINUTE],
          ],
        )
        assert.deepStrictEqual(
          logs.lines.filter((line) => line.startsWith("ERROR")),
          [
            "ERROR Discord circuit breaker open: 50 answers of 401, 403 or " +
              "429 within 10 min; no Discord request for 10 min, far below " +
              "Discord's IP ban at 10 000; alerts are kept",
          ],
        )
      }).pipe(fixedJitter),
  )
})

describe("rejected messages", () => {
  const rejected = {
    status: 400,
    body: {
      message: "Invalid Form Body",
      code: 50035,
      errors: {
        embeds: { "0": { _errors: [{ code: "BASE_TYPE_MAX_LENGTH" }] } },
      },
    },
  }
  const accepted = { status: 200, body: { id: "1" } }
  const reason =
    'Discord Rejected (HTTP 400): Invalid Form Body (code 50035) {"embeds":{"0":{"_errors":[{"code":"BASE_TYPE_MAX_LENGTH"}]}}}'

  it.scoped(
    "split into one-embed messages, shrunk once, then given up and recorded",
    () =>
      Effect.gen(function* () {
        yield* TestClock.setTime(T0)
        const discord = yield* startDiscord()
        for (const answer of [rejected, accepted, rejected, rejected, accepted])
          discord.respondNext(answer)
        const logs = captureLogs()
        const before = yield* failedCount("Rejected")
        yield* Effect.gen(function* () {
          yield* addEvents(3)
          assert.strictEqual(yield* simulate(deliverPending), 2)
          assert.deepStrictEqual(
            (yield* eventRows).map((r) => [
              r.key,
              r.notified_at,
              r.delivery_error,
            ]),
            [
              ["ev-000", T0, null],
              ["ev-001", T0, reason],
              ["ev-002", T0, null],
            ],
          )
          // Settled: the next pass sends nothing.
          assert.strictEqual(yield* simulate(deliverPending), 0)
        }).pipe(
          logs.capture,
          Effect.provide(layerMonitor(envFor(discord), patient)),
        )
        assert.deepStrictEqual(
          discord.requests.map((r) => r.status),
          [400, 200, 400, 400, 200],
        )
        assert.deepStrictEqual(footersPerRequest(discord), [
          ["event ev-000", "event ev-001", "event ev-002"],
          ["event ev-000"],
          ["event ev-001"],
          ["event ev-001"],
          ["event ev-002"],
        ])
        assert.deepStrictEqual(bodyOf(discord.requests[3]!).embeds, [
          {
            title: "web\\-1 stopped",
            color: 0x95a5a6,
            fields: [{ name: "Machine", value: "web\\-1 `ev-m1`" }],
            footer: { text: "event ev-001" },
          },
        ])
        assert.strictEqual((yield* failedCount("Rejected")) - before, 1)
        assert.deepStrictEqual(
          logs.lines.filter((line) => !line.startsWith("INFO")),
          [
            `WARN Discord rejected a message of 3 embeds; sending each alone route=default error=${reason}`,
            "WARN Discord rejected an alert; sending it once more, shrunk to " +
              `its title, machine and key key=ev-001 route=default error=${reason}`,
            "ERROR Discord rejected an alert even in its minimal form: it is " +
              `given up and recorded as undeliverable key=ev-001 route=default error=${reason}`,
          ],
        )
      }),
  )

  it.scoped("a single rejected embed goes straight to its minimal form", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0)
      const discord = yield* startDiscord()
      discord.respondNext(rejected)
      yield* Effect.gen(function* () {
        yield* addEvents(1)
        assert.strictEqual(yield* simulate(deliverPending), 1)
        assert.deepStrictEqual(
          (yield* eventRows).map((r) => [r.notified_at, r.delivery_error]),
          [[T0, null]],
        )
      }).pipe(Effect.provide(layerMonitor(envFor(discord), patient)))
      assert.deepStrictEqual(
        discord.requests.map((r) => [
          r.status,
          bodyOf(r).embeds![0].fields.length,
        ]),
        [
          [400, 8],
          [200, 1],
        ],
      )
    }),
  )
})

describe("a webhook Discord refuses", () => {
  for (const [status, body, why, error] of [
    [
      404,
      { message: "Unknown Webhook", code: 10015 },
      "the webhook was deleted",
      "Discord WebhookGone (HTTP 404): Unknown Webhook (code 10015)",
    ],
    [
      401,
      { message: "Invalid Webhook Token", code: 50027 },
      "the webhook token was rejected, HTTP 401",
      "Discord Unauthorized (HTTP 401): Invalid Webhook Token (code 50027)",
    ],
  ] as const) {
    it.scoped(`${status}: the log says which, and the alerts wait`, () =>
      Effect.gen(function* () {
        yield* TestClock.setTime(T0)
        const discord = yield* startDiscord()
        discord.respondNext({ status, body })
        const logs = captureLogs()
        yield* Effect.gen(function* () {
          yield* addEvents(2)
          const first = yield* discordFailure(simulate(deliverPending))
          yield* TestClock.setTime(T0 + MINUTE)
          const second = yield* discordFailure(simulate(deliverPending))
          assert.deepStrictEqual(
            [first.message, second.reason],
            [error, first.reason],
          )
          assert.deepStrictEqual(
            (yield* eventRows).map((r) => [r.notified_at, r.claimed_until]),
            [
              [null, null],
              [null, null],
            ],
          )
        }).pipe(
          logs.capture,
          Effect.provide(layerMonitor(envFor(discord), patient)),
        )
        assert.strictEqual(discord.requests.length, 1)
        assert.deepStrictEqual(
          logs.lines.filter((line) => line.startsWith("ERROR")),
          [
            "ERROR Discord refused the webhook: no more alerts will be sent " +
              "until DISCORD_WEBHOOK_URL is fixed; alerts are kept and wait " +
              `in the database (${why}) error=${error}`,
          ],
        )
      }),
    )
  }
})

describe("a Discord outage", () => {
  it.scoped(
    "an hour of 5xx, a pass every 5 minutes: each alert once, the oldest in one summary",
    () =>
      Effect.gen(function* () {
        yield* TestClock.setTime(T0)
        const clock = yield* Effect.clock
        const fly = yield* Effect.acquireRelease(
          Effect.promise(() =>
            FakeFly.start({
              token: FLY_TOKEN,
              org: ORG,
              now: () => clock.unsafeCurrentTimeMillis(),
            }),
          ),
          (fly) => Effect.promise(() => fly.stop()),
        )
        const discord = yield* startDiscord()
        fly.addApp("shop")
        fly.addMachine("shop", {
          id: "m1",
          name: "web-1",
          region: "ams",
          guest: { cpu_kind: "shared", cpus: 1, memory_mb: 256 },
        })
        const env = envFor(discord, {
          FLY_API_BASE_URL: fly.url,
          MAX_ALERT_AGE: "30m",
          MAX_RUNTIME: "90d",
          // 24 events of one app in the hour: all of them are wanted here.
          APP_ALERT_LIMIT: "off",
        })
        const quick = { ...patient, discord: Schedule.recurs(2) }
        const announced: Array<{ id: string; timestamp: number }> = []
        const outcomes: Array<string> = []
        const settled = yield* Effect.gen(function* () {
          yield* simulate(runPass)
          discord.respondUntil(T0 + 61 * MINUTE, {
            status: 503,
            body: "upstream connect error or disconnect/reset before headers",
          })
          for (let minute = 5; minute <= 70; minute += 5) {
            yield* TestClock.setTime(T0 + minute * MINUTE)
            if (minute <= 60)
              for (const event of [
                fly.start("m1"),
                fly.exit("m1", { exitCode: 1 }),
              ])
                announced.push({ id: event.id!, timestamp: event.timestamp })
            const pass = yield* Effect.either(simulate(runPass))
            outcomes.push(
              `${minute} ` +
                (pass._tag === "Right"
                  ? `sent ${pass.right.alertsSent}`
                  : pass.left._tag),
            )
          }
          return yield* eventRows
        }).pipe(Effect.provide(layerMonitor(env, quick)))

        assert.deepStrictEqual(outcomes, [
          ...[5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60].map(
            (minute) => `${minute} DiscordError`,
          ),
          "65 sent 12",
          "70 sent 0",
        ])
        // The greeting, three tries per failed pass, then the summary and
        // one message: the machine's 12 events in two embeds (10 + 2).
        assert.deepStrictEqual(
          discord.requests.map((r) => r.status),
          [200, ...Array(36).fill(503), 200, 200],
        )
        // Seen before minute 35: older than MAX_ALERT_AGE at minute 65.
        const collapsed = announced.slice(0, 12)
        const posted = announced.slice(12)
        const [, summary, ...alerts] = discord.messages
        assert.deepStrictEqual(
          alerts.map((m) => m.embeds!.map((e) => footerKeys(e.footer.text))),
          [
            [posted.slice(0, 10), posted.slice(10)].map((events) =>
              events.map((event) => event.id),
            ),
          ],
        )
        assert.deepStrictEqual(
          settled.map((row) => [row.key, row.delivery_error]),
          [
            ...collapsed.map((event) => [
              event.id,
              "collapsed into a summary after MAX_ALERT_AGE",
            ]),
            ...posted.map((event) => [event.id, null]),
          ].sort(([a], [b]) => a!.localeCompare(b!)),
        )
        assert.deepStrictEqual(
          settled.filter((row) => row.notified_at !== T0 + 65 * MINUTE),
          [],
        )
        const embed = summary!.embeds![0]
        const unix = (ms: number) => Math.floor(ms / 1000)
        assert.deepStrictEqual(
          [summary!.allowed_mentions, summary!.embeds!.length, embed.title],
          [{ parse: [] }, 1, "12 alerts could not be delivered in time"],
        )
        const lines = (embed.description as string).split("\n")
        assert.strictEqual(
          lines[0],
          `12 alerts could not be delivered between <t:${unix(collapsed[0]!.timestamp)}:f> ` +
            `and <t:${unix(collapsed[11]!.timestamp)}:f>; the oldest were:`,
        )
        assert.deepStrictEqual(
          lines.slice(1, 11).map((line) => /`([^`]+)`$/.exec(line)?.[1]),
          collapsed.slice(0, 10).map((event) => event.id),
        )
        assert.match(lines[1]!, /^• <t:\d+:f> web\\-1 started `/)
        assert.strictEqual(
          lines.at(-1),
          "They were older than MAX_ALERT_AGE (30 min) when Discord took " +
            "messages again, so they are summed up here instead of posted " +
            "one by one. The monitor's database keeps them all.",
        )
      }),
  )
})

describe("MAX_ALERT_AGE", () => {
  it.effect("defaults to 6 h; a bad value is named at start-up", () =>
    Effect.gen(function* () {
      const read = (env: Record<string, string>) =>
        Effect.either(
          CoreSettings.pipe(
            Effect.withConfigProvider(
              ConfigProvider.fromMap(new Map(Object.entries(env))),
            ),
          ),
        )
      const base = {
        FLY_API_TOKEN: FLY_TOKEN,
        FLY_ORG_SLUG: ORG,
        DISCORD_WEBHOOK_URL: "https://discord.test/api/webhooks/1/secret",
      }
      const defaults = yield* read(base)
      assert.deepStrictEqual(
        Either.map(defaults, ([, , , , , , delivery]) =>
          Duration.toMillis(delivery.maxAlertAge),
        ),
        Either.right(6 * 60 * MINUTE),
      )
      const bad = yield* read({ ...base, MAX_ALERT_AGE: "soon" })
      assert.deepStrictEqual(
        Either.mapLeft(bad, describeConfigError),
        Either.left([
          'MAX_ALERT_AGE: invalid: expected a duration such as "60 seconds", "30s", "5m" or "4h", got "soon"',
        ]),
      )
    }),
  )
})
