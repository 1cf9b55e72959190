import * as FetchHttpClient from "@effect/platform/FetchHttpClient"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientError from "@effect/platform/HttpClientError"
import { Effect, Layer, Ref } from "effect"

export interface SubrequestLimits {
  /** The plan's limit for one invocation. */
  readonly total: number
  /** Requests under this URL stop at `max`, keeping the rest for others. */
  readonly fly: { readonly baseUrl: string; readonly max: number }
}

/** What one invocation sent, and what it refused to send. */
export interface Subrequests {
  readonly total: number
  readonly fly: number
  readonly refused: number
}

export const noSubrequests: Subrequests = { total: 0, fly: 0, refused: 0 }

/**
 * `fetch` for one invocation, refusing a request before it is sent once
 * the budget is spent. The core keeps Fly within its budget, but retries of
 * concurrent machine lists can overshoot it; refused here, they cannot eat
 * Discord's reserve or trip Cloudflare's own limit mid-delivery.
 *
 * Every body is read (and cached for the caller): the Notifier ignores the
 * body of a successful send, and an unread response keeps its connection
 * open in workerd until the platform's finalizer aborts it outside any
 * request, an uncaught error.
 */
export const layerLimitedFetch = (
  limits: SubrequestLimits,
  sent: Ref.Ref<Subrequests>,
) =>
  Layer.effect(
    HttpClient.HttpClient,
    Effect.map(HttpClient.HttpClient, (client) =>
      HttpClient.transform(client, (effect, request) =>
        Effect.gen(function* () {
          const isFly = request.url.startsWith(`${limits.fly.baseUrl}/`)
          const before = yield* Ref.getAndUpdate(sent, (n) =>
            n.total >= limits.total || (isFly && n.fly >= limits.fly.max)
              ? { ...n, refused: n.refused + 1 }
              : { ...n, total: n.total + 1, fly: n.fly + (isFly ? 1 : 0) },
          )
          const refused =
            before.total >= limits.total ||
            (isFly && before.fly >= limits.fly.max)
          if (!refused)
            return yield* Effect.tap(effect, (response) =>
              Effect.ignore(response.text),
            )
          if (before.refused === 0)
            yield* Effect.logWarning(
              "subrequest budget spent: further requests wait for the next invocation",
            ).pipe(
              Effect.annotateLogs({
                fly_max: limits.fly.max,
                total_max: limits.total,
              }),
            )
          return yield* new HttpClientError.RequestError({
            request,
            reason: "Transport",
            description: "subrequest budget of this invocation spent",
          })
        }),
      ),
    ),
  ).pipe(Layer.provide(FetchHttpClient.layer))
