import { afterEach, assert, describe, it } from "vitest"
import { FakeDiscord } from "../src/FakeDiscord.ts"

let discord: FakeDiscord
afterEach(() => discord?.stop())

const post = async (body: unknown, query = "") => {
  const res = await fetch(discord.webhookUrl() + query, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
  })
  const text = await res.text()
  return {
    status: res.status,
    body: text === "" ? undefined : JSON.parse(text),
    headers: res.headers,
  }
}

const quiet = { allowed_mentions: { parse: [] } }
const repeat = (n: number) => "x".repeat(n)

describe("FakeDiscord", () => {
  it("rejects embeds totalling 6001 characters, accepts 6000", async () => {
    discord = await FakeDiscord.start()
    const embeds = (extra: number) => [
      { title: repeat(256), description: repeat(4096) },
      {
        description: repeat(600 + extra),
        fields: [{ name: repeat(24), value: repeat(1000) }],
        footer: { text: `  ${repeat(24)}  ` },
      },
    ]
    const tooBig = await post({ ...quiet, embeds: embeds(1) })
    const justFits = await post({ ...quiet, embeds: embeds(0) })
    assert.deepStrictEqual(tooBig.body, {
      code: 50035,
      message: "Invalid Form Body",
      errors: {
        embeds: {
          _errors: [
            {
              code: "MAX_EMBED_SIZE_EXCEEDED",
              message: "Embed size exceeds maximum size of 6000",
            },
          ],
        },
      },
    })
    assert.deepStrictEqual(
      [tooBig.status, justFits.status, discord.messages.length],
      [400, 204, 1],
    )
  })

  it("counts code points and names the broken field", async () => {
    discord = await FakeDiscord.start()
    const emoji = "🔥".repeat(256)
    const ok = await post({ ...quiet, embeds: [{ title: emoji }] })
    const bad = await post({
      ...quiet,
      username: "Discord Alerts",
      embeds: [{ title: emoji + "!" }],
    })
    assert.strictEqual(ok.status, 204)
    assert.deepStrictEqual(bad.body.errors, {
      username: {
        _errors: [
          {
            code: "USERNAME_INVALID_CONTAINS",
            message: 'Username cannot contain "discord"',
          },
        ],
      },
      embeds: {
        0: {
          title: {
            _errors: [
              {
                code: "BASE_TYPE_MAX_LENGTH",
                message: "Must be 256 or fewer in length.",
              },
            ],
          },
        },
      },
    })
  })

  it("insists on allowed_mentions {parse: []}, JSON and a non-empty body", async () => {
    discord = await FakeDiscord.start()
    const noMentions = await post({ content: "hi" })
    const parseAll = await post({
      content: "hi",
      allowed_mentions: { parse: ["everyone"] },
    })
    const empty = await post({ ...quiet, content: "   " })
    const notJson = await post("{nope")
    assert.deepStrictEqual(
      [noMentions, parseAll, empty, notJson].map((r) => [
        r.status,
        r.body.code,
        r.body.message,
      ]),
      [
        [400, 50035, "allowed_mentions must be {parse: []}"],
        [400, 50035, "allowed_mentions must be {parse: []}"],
        [400, 50006, "Cannot send an empty message"],
        [400, 50109, "The request body contains invalid JSON."],
      ],
    )
    assert.deepStrictEqual(discord.messages, [])
    assert.strictEqual(discord.requests.length, 4)
  })

  it("answers a scripted 429, then accepts the retry", async () => {
    const seen: unknown[] = []
    discord = await FakeDiscord.start({ onMessage: (m) => seen.push(m) })
    discord.respondNext({
      status: 429,
      body: {
        message: "You are being rate limited.",
        retry_after: 0.3,
        global: false,
      },
      headers: { "Retry-After": "1" },
    })
    const message = { ...quiet, username: "Fly Cost Watch", content: "hi" }
    const limited = await post(message)
    const retried = await post(message, "?wait=true")
    assert.deepStrictEqual(
      [limited.status, limited.headers.get("retry-after"), limited.body],
      [
        429,
        "1",
        {
          message: "You are being rate limited.",
          retry_after: 0.3,
          global: false,
        },
      ],
    )
    assert.strictEqual(retried.status, 200)
    assert.strictEqual(retried.body.content, "hi")
    assert.match(retried.body.id, /^\d{17,20}$/)
    assert.deepStrictEqual(
      ["limit", "remaining", "bucket"].map(
        (h) => retried.headers.get(`x-ratelimit-${h}`) !== null,
      ),
      [true, true, true],
    )
    assert.strictEqual(retried.headers.get("x-ratelimit-remaining"), "4")
    assert.deepStrictEqual(seen, [message])
    assert.deepStrictEqual(discord.messages, [message])
    assert.deepStrictEqual(
      discord.requests.map((r) => [r.path, r.query, r.status]),
      [
        ["/api/webhooks/1234567890/fake-webhook-token", "", 429],
        ["/api/webhooks/1234567890/fake-webhook-token", "wait=true", 200],
      ],
    )
  })

  it("resets the socket when scripted to", async () => {
    discord = await FakeDiscord.start()
    discord.respondNext({ status: 500, resetAfterSend: true })
    const outcome = await post({ ...quiet, content: "hi" }).then(
      (r) => r.status,
      () => "reset",
    )
    assert.deepStrictEqual([outcome, discord.requests[0]?.status], ["reset", 0])
  })
})
