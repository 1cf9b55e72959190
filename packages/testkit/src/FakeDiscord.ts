import { createHash } from "node:crypto"
import type * as http from "node:http"
import { validateWebhookBody } from "./DiscordValidation.ts"
import { listenLocal, readBody, type LocalServer } from "./LocalServer.ts"

export interface DiscordMessage {
  content?: string
  username?: string
  embeds?: Array<any>
  allowed_mentions?: any
  flags?: number
}

export interface FakeDiscordRequest {
  path: string
  /** The raw query string, without "?". */
  query: string
  /** Parsed JSON, or the raw text when it was not JSON. */
  body: unknown
  /** 0 when the socket was reset instead of answered. */
  status: number
  at: number
  /** Earlier requests to the same path unanswered when this one arrived. */
  unanswered: number
}

export interface FakeDiscordResponse {
  status: number
  /** A string is sent verbatim; anything else as JSON. */
  body?: unknown
  headers?: Record<string, string>
  times?: number
  delayMs?: number
  resetAfterSend?: boolean
}

export interface FakeDiscordOptions {
  onMessage?: (m: DiscordMessage) => void
  enforceRateLimit?: boolean
  now?: () => number
}

const WEBHOOK = /^\/api(?:\/v\d+)?\/webhooks\/([^/]+)\/([^/]+)\/?$/
const BUCKET_SIZE = 5
const BUCKET_MS = 2000
const DISCORD_EPOCH = 1420070400000n

const snowflake = (ms: number, sequence: number) =>
  String(((BigInt(ms) - DISCORD_EPOCH) << 22n) | BigInt(sequence & 0xfff))

export class FakeDiscord {
  readonly url: string
  readonly messages: DiscordMessage[] = []
  readonly requests: FakeDiscordRequest[] = []

  private readonly scripted: Array<
    FakeDiscordResponse & { remaining: number }
  > = []
  private readonly outages: Array<{
    until: number
    response: FakeDiscordResponse
  }> = []
  private readonly open = new Set<FakeDiscordRequest>()
  private readonly deleted = new Set<string>()
  private readonly buckets = new Map<string, { start: number; used: number }>()
  private readonly onMessage: ((m: DiscordMessage) => void) | undefined
  private readonly enforceRateLimit: boolean
  private readonly now: () => number

  private constructor(
    private readonly server: LocalServer,
    options: FakeDiscordOptions,
  ) {
    this.url = server.url
    this.onMessage = options.onMessage
    this.enforceRateLimit = options.enforceRateLimit ?? false
    this.now = options.now ?? Date.now
  }

  /**
   * `enforceRateLimit` answers 429 once a webhook has used its 5 requests per
   * 2 s; off by default, so only scripted 429s happen. `now` is the clock of
   * the rate-limit buckets, `at` and `respondUntil` (a test's simulated
   * clock); the wall clock by default.
   */
  static async start(options: FakeDiscordOptions = {}): Promise<FakeDiscord> {
    let discord: FakeDiscord | undefined
    const server = await listenLocal((req, res) => {
      // A client that aborts mid-upload must not become an unhandled rejection.
      discord?.handle(req, res).catch(() => res.destroy())
    })
    discord = new FakeDiscord(server, options)
    return discord
  }

  webhookUrl(id?: string, token?: string): string {
    return `${this.url}/api/webhooks/${id ?? "1234567890"}/${token ?? "fake-webhook-token"}`
  }

  /** From now on the webhook `id` answers 404 Unknown Webhook, as Discord does. */
  deleteWebhook(id: string): void {
    this.deleted.add(id)
  }

  respondNext(response: FakeDiscordResponse): void {
    this.scripted.push({ ...response, remaining: response.times ?? 1 })
  }

  /**
   * Answers every request with `response` until `now()` reaches `until` (an
   * outage of a stretch of time rather than of a number of requests).
   * Scripted `respondNext` answers go first; `times` is ignored.
   */
  respondUntil(until: number, response: FakeDiscordResponse): void {
    this.outages.push({ until, response })
  }

  stop(): Promise<void> {
    return this.server.close()
  }

  private async handle(
    req: http.IncomingMessage,
    res: http.ServerResponse,
  ): Promise<void> {
    const url = new URL(req.url ?? "/", "http://127.0.0.1")
    const text = await readBody(req)
    let body: unknown = text
    let isJson = false
    try {
      body = JSON.parse(text)
      isJson = true
    } catch {}
    const record: FakeDiscordRequest = {
      path: url.pathname,
      query: url.search.replace(/^\?/, ""),
      body,
      status: 0,
      at: this.now(),
      unanswered: [...this.open].filter((r) => r.path === url.pathname).length,
    }
    this.requests.push(record)
    this.open.add(record)
    const send = (
      status: number,
      payload: unknown,
      headers: Record<string, string>,
      delayMs = 0,
    ) =>
      this.server.later(delayMs, () => {
        this.open.delete(record)
        record.status = status
        const merged: Record<string, string> = {}
        if (payload !== undefined && typeof payload !== "string") {
          merged["content-type"] = "application/json"
        } else if (typeof payload === "string") {
          merged["content-type"] = "text/plain; charset=utf-8"
        }
        for (const [k, v] of Object.entries(headers)) {
          merged[k.toLowerCase()] = v
        }
        res.writeHead(status, merged)
        res.end(
          payload === undefined
            ? undefined
            : typeof payload === "string"
              ? payload
              : JSON.stringify(payload),
        )
      })

    const route = WEBHOOK.exec(url.pathname)
    if (route === null) {
      return send(404, { message: "404: Not Found", code: 0 }, {})
    }
    if (req.method !== "POST") {
      return send(405, { message: "405: Method Not Allowed", code: 0 }, {})
    }

    if (this.deleted.has(route[1]!))
      return send(404, { message: "Unknown Webhook", code: 10015 }, {})

    const scripted = this.scripted[0]
    if (scripted !== undefined) {
      scripted.remaining -= 1
      if (scripted.remaining <= 0) this.scripted.shift()
    }
    const at = this.now()
    const script =
      scripted ?? this.outages.find((outage) => at < outage.until)?.response
    if (script !== undefined) {
      if (script.resetAfterSend) {
        this.open.delete(record)
        req.socket.destroy()
        return
      }
      return send(
        script.status,
        script.body,
        script.headers ?? {},
        script.delayMs,
      )
    }

    const webhook = `${route[1]}/${route[2]}`
    const limits = this.consume(webhook)
    if (this.enforceRateLimit && limits.exceeded) {
      const retryAfter = Number(limits.headers["x-ratelimit-reset-after"])
      return send(
        429,
        {
          message: "You are being rate limited.",
          retry_after: retryAfter,
          global: false,
        },
        {
          ...limits.headers,
          "retry-after": String(Math.ceil(retryAfter)),
          "x-ratelimit-scope": "user",
        },
      )
    }
    const contentType = req.headers["content-type"] ?? ""
    if (!contentType.toLowerCase().startsWith("application/json")) {
      return send(
        400,
        {
          code: 50035,
          message: "Invalid Form Body",
          errors: {
            _errors: [
              {
                code: "CONTENT_TYPE_INVALID",
                message: `Expected "Content-Type" header to be "application/json" (the fake accepts nothing else).`,
              },
            ],
          },
        },
        limits.headers,
      )
    }
    if (!isJson) {
      return send(
        400,
        { code: 50109, message: "The request body contains invalid JSON." },
        limits.headers,
      )
    }
    const invalid = validateWebhookBody(body)
    if (invalid !== undefined) return send(400, invalid, limits.headers)

    const message = body as DiscordMessage
    this.messages.push(message)
    this.onMessage?.(message)
    const wait = ["true", "1", "True"].includes(
      url.searchParams.get("wait") ?? "",
    )
    if (!wait) return send(204, undefined, limits.headers)
    const now = this.now()
    send(
      200,
      {
        id: snowflake(now, this.messages.length),
        type: 0,
        channel_id: "1100000000000000000",
        webhook_id: route[1],
        author: {
          id: route[1],
          username: message.username ?? "Fake Webhook",
          bot: true,
        },
        content: message.content ?? "",
        embeds: (message.embeds ?? []).map((e) => ({ type: "rich", ...e })),
        timestamp: new Date(now).toISOString(),
        flags: message.flags ?? 0,
      },
      limits.headers,
    )
  }

  private consume(webhook: string): {
    exceeded: boolean
    headers: Record<string, string>
  } {
    const now = this.now()
    let bucket = this.buckets.get(webhook)
    if (bucket === undefined || now - bucket.start >= BUCKET_MS) {
      bucket = { start: now, used: 0 }
      this.buckets.set(webhook, bucket)
    }
    bucket.used += 1
    const resetAfter = (bucket.start + BUCKET_MS - now) / 1000
    return {
      exceeded: bucket.used > BUCKET_SIZE,
      headers: {
        "x-ratelimit-limit": String(BUCKET_SIZE),
        "x-ratelimit-remaining": String(Math.max(0, BUCKET_SIZE - bucket.used)),
        "x-ratelimit-reset": ((bucket.start + BUCKET_MS) / 1000).toFixed(3),
        "x-ratelimit-reset-after": resetAfter.toFixed(3),
        "x-ratelimit-bucket": createHash("sha256")
          .update(webhook)
          .digest("hex")
          .slice(0, 32),
      },
    }
  }
}
