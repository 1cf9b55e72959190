import { assert, describe, it } from "@effect/vitest"
import { FakeDiscord } from "@flymon/testkit/FakeDiscord"
import { FetchHttpClient } from "@effect/platform"
import { Effect, Layer, Logger, LogLevel } from "effect"
import { payload } from "../src/DiscordMessage.ts"
import { Notifier } from "../src/Notifier.ts"
import { RetryPolicy } from "../src/RetryPolicy.ts"
import { layerEnv, quickRetry } from "./support.ts"

const WEBHOOK_TOKEN = "very-secret-webhook-token"

const withDiscord = Effect.acquireRelease(
  Effect.promise(() => FakeDiscord.start()),
  (discord) => Effect.promise(() => discord.stop()),
)

const notifierFor = (discord: FakeDiscord) =>
  Notifier.Default.pipe(
    Layer.orDie,
    Layer.provide(
      Layer.mergeAll(FetchHttpClient.layer, RetryPolicy.layer(quickRetry)),
    ),
    Layer.provide(
      layerEnv({
        DISCORD_WEBHOOK_URL: discord.webhookUrl("42", WEBHOOK_TOKEN),
      }),
    ),
    Layer.provide(Logger.minimumLogLevel(LogLevel.None)),
  )

const message = payload({ content: "hello" })

const send = (discord: FakeDiscord) =>
  Effect.flatMap(Notifier, (notifier) => notifier.send(message)).pipe(
    Effect.provide(notifierFor(discord)),
  )

describe("Notifier", () => {
  it.scopedLive("posts with wait=true and mentions off", () =>
    Effect.gen(function* () {
      const discord = yield* withDiscord
      yield* send(discord)
      assert.deepStrictEqual(
        discord.requests.map((r) => [r.path, r.query, r.status]),
        [[`/api/webhooks/42/${WEBHOOK_TOKEN}`, "wait=true", 200]],
      )
      assert.deepStrictEqual(discord.messages, [
        {
          username: "Fly Machine Monitor",
          allowed_mentions: { parse: [] },
          content: "hello",
        },
      ])
    }),
  )

  it.scopedLive("waits retry_after (float seconds) on a 429, then sends", () =>
    Effect.gen(function* () {
      const discord = yield* withDiscord
      discord.respondNext({
        status: 429,
        body: { message: "You are being rate limited.", retry_after: 0.3 },
        headers: { "Retry-After": "0.3", "X-RateLimit-Remaining": "0" },
      })
      const started = Date.now()
      yield* send(discord)
      const [first, second] = discord.requests
      assert.deepStrictEqual(
        discord.requests.map((r) => r.status),
        [429, 200],
      )
      assert.isAtLeast(second!.at - first!.at, 300)
      assert.isAtLeast(Date.now() - started, 300)
      assert.strictEqual(discord.messages.length, 1)
    }),
  )

  it.scopedLive(
    "gives up at once on a 429 longer than the runtime allows",
    () =>
      Effect.gen(function* () {
        const discord = yield* withDiscord
        discord.respondNext({
          status: 429,
          body: { message: "You are being rate limited.", retry_after: 45 },
        })
        const error = yield* Effect.flip(send(discord))
        assert.strictEqual(error.reason, "RateLimited")
        assert.strictEqual(discord.requests.length, 1)
      }),
  )

  it.scopedLive("retries 5xx with the runtime's backoff", () =>
    Effect.gen(function* () {
      const discord = yield* withDiscord
      discord.respondNext({ status: 502, body: "bad gateway", times: 2 })
      yield* send(discord)
      assert.deepStrictEqual(
        discord.requests.map((r) => r.status),
        [502, 502, 200],
      )
    }),
  )

  it.scopedLive("stops using a deleted webhook, and says why", () =>
    Effect.gen(function* () {
      const discord = yield* withDiscord
      discord.respondNext({
        status: 404,
        body: { message: "Unknown Webhook", code: 10015 },
      })
      const errors = yield* Effect.flatMap(Notifier, (notifier) =>
        Effect.all([
          Effect.flip(notifier.send(message)),
          Effect.flip(notifier.send(message)),
        ]),
      ).pipe(Effect.provide(notifierFor(discord)))
      assert.deepStrictEqual(
        errors.map((e) => e.reason),
        ["WebhookGone", "WebhookGone"],
      )
      assert.strictEqual(
        errors[0]!.message,
        "Discord WebhookGone (HTTP 404): Unknown Webhook (code 10015)",
      )
      assert.strictEqual(discord.requests.length, 1)
    }),
  )

  it.scopedLive("reports Discord's reason for a 400 and does not retry", () =>
    Effect.gen(function* () {
      const discord = yield* withDiscord
      discord.respondNext({
        status: 400,
        body: {
          message: "Invalid Form Body",
          code: 50035,
          errors: { content: { _errors: [{ code: "BASE_TYPE_MAX_LENGTH" }] } },
        },
      })
      const error = yield* Effect.flip(send(discord))
      assert.strictEqual(error.reason, "Rejected")
      assert.strictEqual(
        error.message,
        'Discord Rejected (HTTP 400): Invalid Form Body (code 50035) {"content":{"_errors":[{"code":"BASE_TYPE_MAX_LENGTH"}]}}',
      )
      assert.strictEqual(discord.requests.length, 1)
    }),
  )

  it.scopedLive("never puts the webhook URL in an error", () =>
    Effect.gen(function* () {
      const discord = yield* withDiscord
      discord.respondNext({
        status: 401,
        body: { message: "Invalid Webhook Token", code: 50027 },
      })
      const unauthorized = yield* Effect.flip(send(discord))
      discord.respondNext({ status: 500, resetAfterSend: true, times: 3 })
      const reset = yield* Effect.flip(send(discord))
      assert.deepStrictEqual(
        [unauthorized.reason, reset.reason],
        ["Unauthorized", "Transport"],
      )
      for (const error of [unauthorized, reset]) {
        assert.notInclude(error.message, WEBHOOK_TOKEN)
        assert.notInclude(JSON.stringify(error), WEBHOOK_TOKEN)
        assert.notInclude(String(error), WEBHOOK_TOKEN)
      }
    }),
  )
})
