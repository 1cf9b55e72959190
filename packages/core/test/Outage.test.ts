import { assert, describe, it } from "@effect/vitest"
import { Effect, TestClock } from "effect"
import { runPassAndReport } from "../src/Outage.ts"
import { envFor, fakesAt, layerMonitor } from "./support.ts"

const MINUTE = 60_000
let now = 0

describe("failing passes", () => {
  it.scoped(
    "one alert per outage, a reminder at most every few hours, a recovery note",
    () =>
      Effect.gen(function* () {
        const t0 = Date.UTC(2026, 11, 1)
        now = t0
        yield* TestClock.setTime(t0)
        const { fly, discord } = yield* fakesAt(() => now)
        fly.addApp("web")
        fly.addMachine("web", { id: "m1", name: "web-1", region: "iad" })
        const layer = layerMonitor({
          ...envFor(fly, discord),
          FAILURE_ALERT_AFTER: "3",
          FAILURE_REMIND_EVERY: "6h",
          DIGEST_HOUR: "off",
        })
        const outcomes: Array<string> = []
        yield* Effect.gen(function* () {
          yield* runPassAndReport()
          // The token is revoked for 90 passes, one every 5 minutes.
          fly.failNext(
            { path: /^\/v1\/apps$/ },
            { status: 401, body: '{"error":"token rejected"}', times: 90 },
          )
          for (let pass = 1; pass <= 91; pass++) {
            now = t0 + pass * 5 * MINUTE
            yield* TestClock.setTime(now)
            if (pass === 91) fly.start("m1")
            const result = yield* Effect.either(runPassAndReport())
            outcomes.push(result._tag)
          }
        }).pipe(Effect.provide(layer))

        assert.deepStrictEqual(outcomes, [...Array(90).fill("Left"), "Right"])
        const titled = discord.messages
          .filter((m) => m.embeds !== undefined)
          .map((m) => m.embeds![0].title)
        assert.deepStrictEqual(titled, [
          // Passes 3 (15 min), 75 (6 h 15 min): the alert and one reminder.
          "Fly Machine Monitor: 3 passes failed in a row",
          "Fly Machine Monitor is still failing (75 passes)",
          "web\\-1 started",
          "Fly Machine Monitor recovered",
        ])
        const alert = discord.messages[1]!.embeds![0]
        assert.deepStrictEqual(alert.fields.slice(0, 2), [
          { name: "Failing for", value: "10 min" },
          { name: "Reason", value: "`FlyApiError/Unauthorized`" },
        ])
        assert.include(alert.description, "fly tokens create readonly")
        assert.include(
          discord.messages[4]!.embeds![0].description,
          "after 7 h 30 min and 90 failed passes",
        )
      }),
    60_000,
  )
})

describe("a failure that stops only part of the monitor", () => {
  it.scoped("a deleted route's webhook: the alert says what still works", () =>
    Effect.gen(function* () {
      const t0 = Date.UTC(2026, 11, 1)
      now = t0
      yield* TestClock.setTime(t0)
      const { fly, discord } = yield* fakesAt(() => now)
      fly.addApp("web-shop")
      fly.addMachine("web-shop", { id: "m1", name: "web-1", region: "iad" })
      discord.deleteWebhook("100")
      const layer = layerMonitor({
        ...envFor(fly, discord),
        DISCORD_ROUTES: JSON.stringify([
          {
            name: "web team",
            apps: "web-*",
            webhook: discord.webhookUrl("100", "web-team-token"),
          },
        ]),
        FAILURE_ALERT_AFTER: "3",
        DIGEST_HOUR: "off",
      })
      const outcomes: Array<string> = []
      yield* Effect.gen(function* () {
        yield* runPassAndReport()
        for (let pass = 1; pass <= 3; pass++) {
          now = t0 + pass * 5 * MINUTE
          yield* TestClock.setTime(now)
          fly.start("m1")
          const result = yield* Effect.either(runPassAndReport())
          outcomes.push(result._tag)
        }
      }).pipe(Effect.provide(layer))

      assert.deepStrictEqual(outcomes, ["Left", "Left", "Left"])
      const alert = discord.messages.find(
        (m) =>
          m.embeds?.[0]?.title ===
          "Fly Machine Monitor: 3 passes failed in a row",
      )!.embeds![0]
      assert.strictEqual(
        alert.description,
        "Machine events are checked, but alerts are not reaching Discord: " +
          "they wait in the database and go out once it takes them again. " +
          "Discord refused a webhook (deleted, or its token is wrong): create " +
          "a new one and update DISCORD_WEBHOOK_URL, or the route of " +
          "DISCORD_ROUTES the last error names.",
      )
      assert.deepStrictEqual(alert.fields.slice(1), [
        { name: "Reason", value: "`DiscordError/WebhookGone`" },
        {
          name: "Last error",
          value:
            "Discord WebhookGone\\: route web team\\: sending stopped after " +
            "an earlier answer\\: Unknown Webhook \\(code 10015\\)",
        },
      ])
      assert.notInclude(JSON.stringify(discord.messages), "web-team-token")
    }),
  )
})
