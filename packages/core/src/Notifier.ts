import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import type * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import {
  Console,
  Data,
  Duration,
  Effect,
  Layer,
  Metric,
  Option,
  Redacted,
  Ref,
  Schedule,
  Schema,
} from "effect"
import type { DiscordPayload } from "./DiscordMessage.ts"
import * as Metrics from "./Metrics.ts"
import { RetryPolicy } from "./RetryPolicy.ts"
import { DiscordSettings } from "./Settings.ts"

export type DiscordErrorReason =
  | "WebhookGone"
  | "Unauthorized"
  | "Rejected"
  | "RateLimited"
  | "ServerError"
  | "Timeout"
  | "Transport"

/** Never carries the webhook URL: it is a credential. */
export class DiscordError extends Data.TaggedError("DiscordError")<{
  readonly reason: DiscordErrorReason
  readonly status?: number
  readonly detail: string
  readonly retryAfter?: Duration.Duration
}> {
  override get message() {
    const status = this.status === undefined ? "" : ` (HTTP ${this.status})`
    return `Discord ${this.reason}${status}: ${this.detail}`
  }
}

const retryable: ReadonlySet<DiscordErrorReason> = new Set([
  "RateLimited",
  "ServerError",
  "Timeout",
  "Transport",
])

/** The webhook is gone or its token is wrong: sending again cannot help. */
export const isPermanent = (error: DiscordError) =>
  error.reason === "WebhookGone" || error.reason === "Unauthorized"

const DiscordErrorBody = Schema.Struct({
  message: Schema.optional(Schema.String),
  code: Schema.optional(Schema.Number),
  retry_after: Schema.optional(Schema.Number),
  global: Schema.optional(Schema.Boolean),
  errors: Schema.optional(Schema.Unknown),
})

const USER_AGENT = "DiscordBot (https://github.com/fly-machine-monitor, 0.1.0)"

const failure = (response: HttpClientResponse.HttpClientResponse) =>
  response.text.pipe(
    Effect.orElseSucceed(() => ""),
    Effect.flatMap((text) => {
      const body = Option.getOrUndefined(
        Schema.decodeUnknownOption(Schema.parseJson(DiscordErrorBody))(text),
      )
      const status = response.status
      const said = body?.message
        ? `${body.message}${body.code === undefined ? "" : ` (code ${body.code})`}`
        : text.trim().slice(0, 200) || "no details"
      const errorTree =
        body?.errors === undefined
          ? ""
          : ` ${JSON.stringify(body.errors).slice(0, 500)}`
      if (status === 429) {
        const header = Number(response.headers["retry-after"])
        const seconds = Math.max(
          body?.retry_after ?? 0,
          Number.isFinite(header) ? header : 0,
        )
        return Effect.fail(
          new DiscordError({
            reason: "RateLimited",
            status,
            detail: `${said}; retry after ${seconds}s${body?.global ? " (global)" : ""}`,
            retryAfter: Duration.millis(Math.ceil(seconds * 1000)),
          }),
        )
      }
      const reason: DiscordErrorReason =
        status === 404
          ? "WebhookGone"
          : status === 401 || status === 403
            ? "Unauthorized"
            : status >= 500
              ? "ServerError"
              : "Rejected"
      return Effect.fail(
        new DiscordError({ reason, status, detail: said + errorTree }),
      )
    }),
  )

export class Notifier extends Effect.Service<Notifier>()("@flymon/Notifier", {
  effect: Effect.gen(function* () {
    const settings = yield* DiscordSettings
    const policy = yield* RetryPolicy
    const client = (yield* HttpClient.HttpClient).pipe(
      HttpClient.withTracerPropagation(false),
    )
    const url = new URL(Redacted.value(settings.webhookUrl))
    url.searchParams.set("wait", "true")
    const webhook = Redacted.make(url.toString())
    // Once Discord says the webhook is gone or the token is wrong, every
    // further request would only count towards Discord's invalid-request ban.
    const disabled = yield* Ref.make(Option.none<DiscordError>())

    const attempt = (body: DiscordPayload) =>
      HttpClientRequest.post(Redacted.value(webhook)).pipe(
        HttpClientRequest.setHeader("user-agent", USER_AGENT),
        HttpClientRequest.bodyUnsafeJson(body),
        client.execute,
        Effect.mapError(
          (cause) =>
            new DiscordError({
              reason: "Transport",
              detail: `network error (${cause.reason})`,
            }),
        ),
        // The body is read even on success: workerd aborts a response left
        // unread, outside the request that owns it.
        Effect.flatMap((response) =>
          response.status >= 200 && response.status < 300
            ? Effect.ignore(response.text)
            : failure(response),
        ),
        Effect.tapError((error) =>
          error.reason === "RateLimited"
            ? Metric.increment(Metrics.discordRateLimited)
            : Effect.void,
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

    // A 429 waits exactly what Discord asks for; other failures follow the
    // runtime's backoff. A wait longer than the runtime allows ends the send,
    // and the alerts stay undelivered for the next pass.
    const schedule = Schedule.identity<DiscordError>().pipe(
      Schedule.intersect(policy.discord),
      Schedule.modifyDelay(([error], delay) =>
        error.retryAfter === undefined ? delay : error.retryAfter,
      ),
    )
    const shouldRetry = (error: DiscordError) =>
      retryable.has(error.reason) &&
      (error.retryAfter === undefined ||
        Duration.lessThanOrEqualTo(
          error.retryAfter,
          policy.longestRateLimitWait,
        ))

    const send = Effect.fn("Notifier.send")(function* (body: DiscordPayload) {
      const stopped = yield* Ref.get(disabled)
      if (Option.isSome(stopped)) {
        return yield* Effect.fail(
          new DiscordError({
            reason: stopped.value.reason,
            detail: `sending stopped after an earlier answer: ${stopped.value.detail}`,
          }),
        )
      }
      yield* attempt(body).pipe(
        Effect.tapError((error) =>
          shouldRetry(error)
            ? Effect.logWarning(
                `Discord send will be retried: ${error.message}`,
              )
            : Effect.void,
        ),
        Effect.retry({ schedule, while: shouldRetry }),
        Effect.tapError((error) =>
          isPermanent(error)
            ? Ref.set(disabled, Option.some(error)).pipe(
                Effect.zipRight(
                  Effect.logError(
                    "Discord refused the webhook: no more alerts will be sent " +
                      "until DISCORD_WEBHOOK_URL is fixed; alerts are kept",
                  ).pipe(Effect.annotateLogs("error", error.message)),
                ),
              )
            : Effect.void,
        ),
      )
    })

    return { send }
  }),
}) {
  /** Prints each message instead of sending it (`--dry-run`). */
  static readonly DryRun = Layer.succeed(
    Notifier,
    Notifier.make({
      send: (body: DiscordPayload) =>
        Console.log(JSON.stringify(body, null, 2)).pipe(Effect.as(undefined)),
    }),
  )
}
