import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import {
  Clock,
  Console,
  Data,
  Duration,
  Effect,
  Layer,
  Metric,
  Option,
  Random,
  Redacted,
  Ref,
  Schedule,
  Schema,
} from "effect"
import type { DiscordPayload } from "./DiscordMessage.ts"
import * as Metrics from "./Metrics.ts"
import { RetryPolicy } from "./RetryPolicy.ts"
import { DEFAULT_ROUTE } from "./Routes.ts"
import { DiscordSettings } from "./Settings.ts"

export type DiscordErrorReason =
  | "WebhookGone"
  | "Unauthorized"
  | "Rejected"
  | "RateLimited"
  /** A 429 without rate-limit headers: Cloudflare blocks this IP. */
  | "Banned"
  /** Too many 401/403/429 answers lately: sending is paused. */
  | "CircuitOpen"
  /** Our own pacing would wait longer than the runtime allows. */
  | "Paced"
  | "ServerError"
  | "Timeout"
  | "Transport"

/** Never carries the webhook URL: it is a credential. */
export class DiscordError extends Data.TaggedError("DiscordError")<{
  readonly reason: DiscordErrorReason
  readonly status?: number
  readonly detail: string
  readonly retryAfter?: Duration.Duration
  /** The wait holds for every webhook: a global 429, a ban, the breaker. */
  readonly everyWebhook?: boolean
}> {
  override get message() {
    const status = this.status === undefined ? "" : ` (HTTP ${this.status})`
    return `Discord ${this.reason}${status}: ${this.detail}`
  }
}

const retryable: ReadonlySet<DiscordErrorReason> = new Set([
  "RateLimited",
  "Banned",
  "CircuitOpen",
  "ServerError",
  "Timeout",
  "Transport",
])

/** The webhook is gone or its token is wrong: sending again cannot help. */
export const isPermanent = (error: DiscordError) =>
  error.reason === "WebhookGone" || error.reason === "Unauthorized"

// Pacing per webhook. The headers allow about 5 requests per 2 s, but a
// channel also has an unannounced limit near 30 messages a minute whose 429
// asks for a 40 s wait; staying under it keeps alerts flowing.
export const MESSAGES_PER_WINDOW = 25
export const MESSAGE_WINDOW = Duration.seconds(60)
/** Added to each 429 wait, so senders told the same time spread out. */
export const MAX_JITTER = Duration.millis(250)
/** The first pause after a 429 without rate-limit headers (an IP ban). */
export const BAN_PAUSE = Duration.minutes(15)
/** Each further ban doubles the pause, up to this. */
export const LONGEST_BAN_PAUSE = Duration.minutes(60)
// Discord bans an IP for 10 000 answers of 401, 403 or 429 in 10 minutes;
// a sender working as intended gets a handful, so 50 means a bug.
export const INVALID_ANSWER_LIMIT = 50
export const INVALID_ANSWER_WINDOW = Duration.minutes(10)
export const BREAKER_PAUSE = Duration.minutes(10)

const DiscordErrorBody = Schema.Struct({
  message: Schema.optional(Schema.String),
  code: Schema.optional(Schema.Number),
  retry_after: Schema.optional(Schema.Number),
  global: Schema.optional(Schema.Boolean),
  errors: Schema.optional(Schema.Unknown),
})

const USER_AGENT = "DiscordBot (https://github.com/fly-machine-monitor, 0.1.0)"

interface Answer {
  readonly status: number
  readonly headers: Readonly<Record<string, string | undefined>>
  readonly text: string
}

const seconds = (text: string | undefined) => {
  const value = text === undefined ? NaN : Number(text)
  return Number.isFinite(value) && value >= 0 ? value : undefined
}

/** What an answer other than 2xx means, and how long it asks us to wait. */
const judge = (answer: Answer) => {
  const body = Option.getOrUndefined(
    Schema.decodeUnknownOption(Schema.parseJson(DiscordErrorBody))(answer.text),
  )
  const { status, headers } = answer
  const said = body?.message
    ? `${body.message}${body.code === undefined ? "" : ` (code ${body.code})`}`
    : answer.text.trim().slice(0, 200) || "no details"
  const errorTree =
    body?.errors === undefined
      ? ""
      : ` ${JSON.stringify(body.errors).slice(0, 500)}`
  if (status === 429) {
    const limited = Object.keys(headers).some((name) =>
      name.startsWith("x-ratelimit-"),
    )
    if (!limited && body?.retry_after === undefined)
      return {
        error: new DiscordError({
          reason: "Banned",
          status,
          detail: `${said}; no rate-limit headers: Cloudflare is blocking this IP`,
        }),
        global: false,
      }
    const wait = Math.max(
      body?.retry_after ?? 0,
      seconds(headers["retry-after"]) ?? 0,
    )
    const global =
      body?.global === true || headers["x-ratelimit-global"] !== undefined
    return {
      error: new DiscordError({
        reason: "RateLimited",
        status,
        detail: `${said}; retry after ${wait}s${global ? " (global)" : ""}`,
        retryAfter: Duration.millis(Math.ceil(wait * 1000)),
      }),
      global,
    }
  }
  const reason: DiscordErrorReason =
    status === 404
      ? "WebhookGone"
      : status === 401 || status === 403
        ? "Unauthorized"
        : status >= 500
          ? "ServerError"
          : "Rejected"
  return {
    error: new DiscordError({ reason, status, detail: said + errorTree }),
    global: false,
  }
}

/** One webhook's queue: one request in flight, paced by what Discord said. */
interface Gate {
  readonly url: string
  readonly lock: Effect.Semaphore
  /** Set when Discord said the webhook is gone or its token is wrong. */
  disabled: DiscordError | undefined
  /** `X-RateLimit-Remaining` was 0: not before `Reset-After`. */
  readyAt: number
  /** A 429 for this webhook: not before its `retry_after`. */
  limitedUntil: number
  /** When the latest requests went out, at most MESSAGES_PER_WINDOW. */
  readonly sent: Array<number>
}

/** A pause of every Discord send of this process. */
interface Pause {
  readonly until: number
  readonly reason: "RateLimited" | "Banned" | "CircuitOpen"
  readonly why: string
}

export interface SendOptions {
  /** Another webhook than DISCORD_WEBHOOK_URL. */
  readonly webhookUrl?: Redacted.Redacted<string>
  /** The route's name, for log lines (the URL is a secret). */
  readonly route?: string
}

const withWait = (
  error: DiscordError,
  retryAfter: Duration.Duration,
  everyWebhook: boolean,
) =>
  new DiscordError({
    reason: error.reason,
    detail: error.detail,
    retryAfter,
    everyWebhook,
    ...(error.status === undefined ? {} : { status: error.status }),
  })

const minutes = (duration: Duration.Duration) =>
  `${Math.round(Duration.toMinutes(duration))} min`

export class Notifier extends Effect.Service<Notifier>()("@flymon/Notifier", {
  effect: Effect.gen(function* () {
    const settings = yield* DiscordSettings
    const policy = yield* RetryPolicy
    const client = (yield* HttpClient.HttpClient).pipe(
      HttpClient.withTracerPropagation(false),
    )
    const allowedMs = Duration.toMillis(policy.longestRateLimitWait)
    const windowMs = Duration.toMillis(MESSAGE_WINDOW)
    const gates = new Map<string, Gate>()
    const pause = yield* Ref.make<Pause>({
      until: 0,
      reason: "RateLimited",
      why: "",
    })
    const bans = yield* Ref.make(0)
    const invalidAnswers = yield* Ref.make<ReadonlyArray<number>>([])

    const gateFor = (webhook: Redacted.Redacted<string>) =>
      Effect.sync(() => {
        const url = new URL(Redacted.value(webhook))
        url.searchParams.set("wait", "true")
        const key = url.toString()
        const known = gates.get(key)
        if (known !== undefined) return known
        const gate: Gate = {
          url: key,
          lock: Effect.unsafeMakeSemaphore(1),
          disabled: undefined,
          readyAt: 0,
          limitedUntil: 0,
          sent: [],
        }
        gates.set(key, gate)
        return gate
      })

    const pauseAll = (next: Pause) =>
      Ref.update(pause, (current) =>
        next.until > current.until ? next : current,
      )

    /** Waits until this webhook may send, or fails if that is too long. */
    const awaitTurn = (gate: Gate): Effect.Effect<void, DiscordError> =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const paused = yield* Ref.get(pause)
        const windowFull = gate.sent.length >= MESSAGES_PER_WINDOW
        const paceAt = Math.max(
          gate.readyAt,
          windowFull ? gate.sent[0]! + windowMs : 0,
        )
        const until = Math.max(paused.until, gate.limitedUntil, paceAt)
        if (until <= now) return
        const wait = until - now
        if (wait > allowedMs) {
          const retryAfter = Duration.millis(wait)
          const waitText = `for ${Math.ceil(wait / 1000)} s more`
          return yield* Effect.fail(
            until === paused.until
              ? new DiscordError({
                  reason: paused.reason,
                  detail: `every Discord send is paused ${waitText}: ${paused.why}`,
                  retryAfter,
                  everyWebhook: true,
                })
              : until === gate.limitedUntil
                ? new DiscordError({
                    reason: "RateLimited",
                    detail: `Discord asked this webhook to wait ${waitText}`,
                    retryAfter,
                  })
                : new DiscordError({
                    reason: "Paced",
                    detail: windowFull
                      ? `${MESSAGES_PER_WINDOW} messages in ${Duration.format(MESSAGE_WINDOW)} sent; the next may go in ${Math.ceil(wait / 1000)} s`
                      : `Discord's rate-limit headers ask to wait ${waitText}`,
                    retryAfter,
                  }),
          )
        }
        yield* Effect.sleep(Duration.millis(wait))
        // A pause may have begun meanwhile (a global 429 on another webhook).
        yield* awaitTurn(gate)
      })

    const exchange = (gate: Gate, body: DiscordPayload) =>
      HttpClientRequest.post(gate.url).pipe(
        HttpClientRequest.setHeader("user-agent", USER_AGENT),
        HttpClientRequest.bodyUnsafeJson(body),
        client.execute,
        // The body is read even on success: workerd aborts a response left
        // unread, outside the request that owns it.
        Effect.flatMap((response) =>
          response.text.pipe(
            Effect.orElseSucceed(() => ""),
            Effect.map((text): Answer => ({
              status: response.status,
              headers: response.headers,
              text,
            })),
          ),
        ),
        Effect.mapError(
          (cause) =>
            new DiscordError({
              reason: "Transport",
              detail: `network error (${cause.reason})`,
            }),
        ),
        Effect.timeoutFail({
          duration: policy.requestTimeout,
          onTimeout: () =>
            new DiscordError({
              reason: "Timeout",
              detail: `no answer within ${Duration.format(policy.requestTimeout)}`,
            }),
        }),
      )

    /** Counts a 401/403/429 answer; past the limit, pauses every send. */
    const countInvalid = (now: number) =>
      Effect.gen(function* () {
        const windowStart = now - Duration.toMillis(INVALID_ANSWER_WINDOW)
        const recent = [
          ...(yield* Ref.get(invalidAnswers)).filter((at) => at > windowStart),
          now,
        ]
        if (recent.length < INVALID_ANSWER_LIMIT) {
          yield* Ref.set(invalidAnswers, recent)
          return
        }
        yield* Ref.set(invalidAnswers, [])
        const why =
          `${recent.length} answers of 401, 403 or 429 within ` +
          `${minutes(INVALID_ANSWER_WINDOW)}`
        yield* pauseAll({
          until: now + Duration.toMillis(BREAKER_PAUSE),
          reason: "CircuitOpen",
          why: `circuit breaker open after ${why}`,
        })
        yield* Effect.logError(
          `Discord circuit breaker open: ${why}; no Discord request for ` +
            `${minutes(BREAKER_PAUSE)}, far below Discord's IP ban at ` +
            `10 000; alerts are kept`,
        )
      })

    /** Learns pacing from an answer; fails unless Discord accepted it. */
    const learn = (gate: Gate, answer: Answer) =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const { headers, status } = answer
        const resetAfter = seconds(headers["x-ratelimit-reset-after"])
        if (
          headers["x-ratelimit-remaining"] === "0" &&
          resetAfter !== undefined
        )
          gate.readyAt = Math.max(gate.readyAt, now + resetAfter * 1000)
        if (status >= 200 && status < 300) {
          yield* Ref.set(bans, 0)
          return
        }
        const { error, global } = judge(answer)
        // Discord does not count 429s of a shared limit towards its ban.
        if (
          (status === 401 || status === 403 || status === 429) &&
          headers["x-ratelimit-scope"] !== "shared"
        )
          yield* countInvalid(now)
        if (status !== 429) return yield* Effect.fail(error)
        yield* Metric.increment(Metrics.discordRateLimited)
        if (error.reason === "Banned") {
          const strikes = yield* Ref.updateAndGet(bans, (n) => n + 1)
          const pauseFor = Duration.min(
            Duration.times(BAN_PAUSE, 2 ** Math.min(strikes - 1, 8)),
            LONGEST_BAN_PAUSE,
          )
          yield* pauseAll({
            until: now + Duration.toMillis(pauseFor),
            reason: "Banned",
            why: "Discord answered 429 without rate-limit headers: an IP ban",
          })
          yield* Effect.logError(
            "Discord is blocking this IP address (HTTP 429 without " +
              "rate-limit headers, a Cloudflare ban): no Discord request " +
              `for ${minutes(pauseFor)}; alerts are kept`,
          ).pipe(Effect.annotateLogs("error", error.message))
          return yield* Effect.fail(withWait(error, pauseFor, true))
        }
        const jitter = Math.min(
          Math.floor(
            (yield* Random.next) * (Duration.toMillis(MAX_JITTER) + 1),
          ),
          Duration.toMillis(MAX_JITTER),
        )
        const wait =
          Duration.toMillis(error.retryAfter ?? Duration.zero) + jitter
        if (global) {
          yield* pauseAll({
            until: now + wait,
            reason: "RateLimited",
            why: "Discord's global rate limit",
          })
          yield* Effect.logWarning(
            `Discord's global rate limit: every Discord send waits ${wait} ms`,
          )
        } else gate.limitedUntil = Math.max(gate.limitedUntil, now + wait)
        return yield* Effect.fail(
          withWait(error, Duration.millis(wait), global),
        )
      })

    /** One attempt: wait for our turn, send, learn from the answer. */
    const attempt = (gate: Gate, body: DiscordPayload) =>
      Effect.gen(function* () {
        if (gate.disabled !== undefined)
          return yield* Effect.fail(
            new DiscordError({
              reason: gate.disabled.reason,
              detail: `sending stopped after an earlier answer: ${gate.disabled.detail}`,
            }),
          )
        yield* awaitTurn(gate)
        gate.sent.push(yield* Clock.currentTimeMillis)
        if (gate.sent.length > MESSAGES_PER_WINDOW) gate.sent.shift()
        const answer = yield* exchange(gate, body)
        yield* learn(gate, answer)
      })

    // Waits Discord asks for happen in `awaitTurn`, before the next attempt;
    // other failures follow the runtime's backoff. A wait longer than the
    // runtime allows ends the send, and the alerts stay for the next pass.
    const schedule = Schedule.identity<DiscordError>().pipe(
      Schedule.intersect(policy.discord),
      Schedule.modifyDelay(([error], delay) =>
        error.retryAfter === undefined ? delay : Duration.zero,
      ),
    )
    const shouldRetry = (error: DiscordError) =>
      retryable.has(error.reason) &&
      (error.retryAfter === undefined ||
        Duration.lessThanOrEqualTo(
          error.retryAfter,
          policy.longestRateLimitWait,
        ))

    const disable = (gate: Gate, error: DiscordError, route: string) =>
      Effect.suspend(() => {
        gate.disabled = error
        const fix =
          route === DEFAULT_ROUTE
            ? "DISCORD_WEBHOOK_URL is fixed"
            : `the webhook of ${route} in DISCORD_ROUTES is fixed`
        return Effect.logError(
          "Discord refused the webhook: no more alerts will be sent until " +
            `${fix}; alerts are kept and wait in the ` +
            (error.reason === "WebhookGone"
              ? "database (the webhook was deleted)"
              : `database (the webhook token was rejected, HTTP ${error.status})`),
        ).pipe(Effect.annotateLogs("error", error.message))
      })

    const send = Effect.fn("Notifier.send")(function* (
      body: DiscordPayload,
      options: SendOptions = {},
    ) {
      const gate = yield* gateFor(options.webhookUrl ?? settings.webhookUrl)
      yield* attempt(gate, body).pipe(
        Effect.tapError((error) =>
          shouldRetry(error)
            ? Effect.logWarning(
                `Discord send will be retried: ${error.message}`,
              )
            : Effect.void,
        ),
        Effect.retry({ schedule, while: shouldRetry }),
        Effect.tapError((error) =>
          isPermanent(error) &&
          error.status !== undefined &&
          gate.disabled === undefined
            ? disable(gate, error, options.route ?? DEFAULT_ROUTE)
            : Effect.void,
        ),
        gate.lock.withPermits(1),
      )
    })

    return { send }
  }),
}) {
  /**
   * Prints each message instead of sending it (`--dry-run`), under a line
   * naming its route (never the webhook URL).
   */
  static readonly DryRun = Layer.succeed(
    Notifier,
    Notifier.make({
      send: (body: DiscordPayload, options: SendOptions = {}) =>
        Console.log(
          `# route: ${options.route ?? DEFAULT_ROUTE}\n` +
            JSON.stringify(body, null, 2),
        ).pipe(Effect.as(undefined)),
    }),
  )
}
