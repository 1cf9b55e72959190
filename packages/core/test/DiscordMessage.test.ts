import { assert, describe, it } from "@effect/vitest"
import { validateWebhookBody } from "@flymon/testkit/DiscordValidation"
import {
  embedLength,
  escapeMarkdown,
  eventEmbed,
  Limits,
  pack,
  payload,
  truncate,
  watchingMessage,
} from "../src/DiscordMessage.ts"
import type { PendingEvent } from "../src/EventStore.ts"
import { FLY_PRICES } from "../src/Pricing.ts"

const crash: PendingEvent = {
  key: "01K4SR45V786H3N42CM40E1PXY",
  machineId: "148ed193b95089",
  app: "shop-web",
  type: "exit",
  status: "stopped",
  source: "flyd",
  timestamp: Date.UTC(2026, 11, 3, 9, 30, 0),
  exit: {
    exitCode: 1,
    oomKilled: false,
    requestedStop: false,
    restartCount: 2,
    error: null,
  },
  machineName: "web-1",
  region: "ams",
  size: "shared-cpu-1x 256MB",
  guest: { cpu_kind: "shared", cpus: 1, memory_mb: 256 },
}

describe("Discord messages", () => {
  it("shows what happened, where, and the dedupe key", () => {
    assert.deepStrictEqual(eventEmbed(crash, FLY_PRICES), {
      title: "web\\-1 crashed with exit code 1",
      color: 0xe74c3c,
      fields: [
        { name: "App", value: "shop\\-web", inline: true },
        { name: "Machine", value: "web\\-1 `148ed193b95089`", inline: true },
        { name: "Region", value: "ams", inline: true },
        { name: "Size", value: "shared\\-cpu\\-1x 256MB", inline: true },
        { name: "Event", value: "exit / stopped", inline: true },
        { name: "Requested by", value: "flyd", inline: true },
        {
          name: "Exit",
          value: "code 1 · OOM no · requested stop no · restarts 2",
        },
        {
          name: "When",
          value: "<t:1796290200:f> (<t:1796290200:R>)",
        },
      ],
      footer: { text: "event 01K4SR45V786H3N42CM40E1PXY" },
      timestamp: "2026-12-03T09:30:00.000Z",
    })
  })

  it("names starts, requested stops and OOM kills", () => {
    const start = eventEmbed(
      {
        ...crash,
        type: "start",
        status: "started",
        exit: undefined,
      },
      FLY_PRICES,
    )
    const stop = eventEmbed(
      {
        ...crash,
        exit: { ...crash.exit!, exitCode: 143, requestedStop: true },
      },
      FLY_PRICES,
    )
    const oom = eventEmbed(
      {
        ...crash,
        exit: { ...crash.exit!, exitCode: 137, oomKilled: true },
      },
      FLY_PRICES,
    )
    assert.deepStrictEqual(
      [start, stop, oom].map((embed) => [embed.title, embed.color]),
      [
        ["web\\-1 started", 0x2ecc71],
        ["web\\-1 stopped", 0x95a5a6],
        ["web\\-1 exited: out of memory", 0xe74c3c],
      ],
    )
  })

  it("shows the hourly rate on a start, and what a run cost on its end", () => {
    const start = eventEmbed(
      { ...crash, type: "start", status: "started", exit: undefined },
      FLY_PRICES,
    )
    const stop = eventEmbed(
      {
        ...crash,
        region: "sjc",
        guest: { cpu_kind: "performance", cpus: 2, memory_mb: 4096 },
        ranMs: (6 * 60 + 12) * 60_000,
      },
      FLY_PRICES,
    )
    assert.deepStrictEqual(start.fields.at(-2), {
      name: "Cost",
      value: "≈ $0.0027/h while started (baseline price for region ams)",
    })
    // performance-2x: 2 × $31.00 per 30 days, × 2.32/1.94 in sjc, 6.2 hours.
    assert.deepStrictEqual(stop.fields.at(-2), {
      name: "Run",
      value: "ran 6 h 12 min · ≈ $0.64",
    })
  })

  it("escapes markdown and defuses mentions in Fly strings", () => {
    assert.strictEqual(
      escapeMarkdown("@everyone **boom** <@123> _x_ `y` [z](http://a)"),
      "@\u200beveryone \\*\\*boom\\*\\* \\<@\u200b123\\> \\_x\\_ \\`y\\` " +
        "\\[z\\]\\(http\\://a\\)",
    )
    assert.strictEqual(escapeMarkdown("a\nb\r\nc"), "a b c")
  })

  it("truncates by code points and marks the cut", () => {
    assert.strictEqual(truncate("abcdef", 4), "abc…")
    assert.strictEqual(truncate("abc", 3), "abc")
    assert.strictEqual(truncate("😀😀😀😀", 3), "😀😀…")
    assert.strictEqual(Array.from(truncate("😀".repeat(300), 256)).length, 256)
  })

  it("keeps every field within Discord's limits for hostile input", () => {
    const huge = "@here *_".repeat(2000)
    const embed = eventEmbed(
      {
        ...crash,
        key: "k".repeat(5000),
        app: huge,
        machineName: huge,
        region: huge,
        size: huge,
        source: huge,
        status: huge,
        type: huge,
        exit: { ...crash.exit!, error: huge },
      },
      FLY_PRICES,
    )
    const points = (s: string) => Array.from(s).length
    assert.isAtMost(points(embed.title), Limits.title)
    assert.isAtMost(points(embed.footer.text), Limits.footer)
    assert.isAtMost(embed.fields.length, Limits.fields)
    for (const field of embed.fields) {
      assert.isAtMost(points(field.name), Limits.fieldName)
      assert.isAtMost(points(field.value), Limits.fieldValue)
    }
    assert.isFalse(embed.fields.some((f) => f.value.includes("@here")))
    assert.strictEqual(
      validateWebhookBody(payload({ embeds: [embed] })),
      undefined,
    )
  })

  it("packs at most 10 embeds and 6000 characters per message", () => {
    const small = Array.from({ length: 25 }, (_, i) =>
      eventEmbed({ ...crash, key: `k${i}` }, FLY_PRICES),
    )
    assert.deepStrictEqual(
      pack(small).map((m) => m.length),
      [10, 10, 5],
    )
    const heavy = Array.from({ length: 12 }, (_, i) =>
      eventEmbed(
        {
          ...crash,
          key: `k${i}`,
          exit: { ...crash.exit!, error: "x".repeat(2000) },
          machineName: "y".repeat(2000),
        },
        FLY_PRICES,
      ),
    )
    const messages = pack(heavy)
    assert.deepStrictEqual(
      messages.flat(),
      Array.from({ length: 12 }, (_, i) => i),
    )
    for (const message of messages) {
      const total = message.reduce((sum, i) => sum + embedLength(heavy[i]!), 0)
      assert.isAtMost(total, Limits.totalPerMessage)
      assert.strictEqual(
        validateWebhookBody(payload({ embeds: message.map((i) => heavy[i]!) })),
        undefined,
      )
    }
  })

  it("sends every message with mentions off and a fixed username", () => {
    assert.deepStrictEqual(
      watchingMessage({
        org: "acme",
        apps: 3,
        appsPolled: 3,
        machines: 5,
        running: 1,
        monitored: ["start", "stop", "exit"],
      }),
      {
        username: "Fly Machine Monitor",
        allowed_mentions: { parse: [] },
        content:
          "Now watching org `acme`: 3 apps, 5 machines, 1 running. " +
          "Machine start, stop and exit events from now on will be posted here.",
      },
    )
  })
})
