import { EventStore } from "@flymon/core/EventStore"
import { Clock, Cron, Effect, Either, Schema } from "effect"
import { LAST_PASS_KEY, LastPassJson, type LastPass } from "./LastPass.ts"

/** Cron events a pass may miss before /healthz calls the Worker stale. */
export const MISSED_CRONS_ALLOWED = 3
/** Time a pass of the latest cron event has to finish. */
const GRACE_MS = 60_000

/**
 * True once `MISSED_CRONS_ALLOWED` cron events after the last pass have
 * passed without a newer one. Cloudflare runs crons in UTC; an expression
 * Effect's `Cron` cannot parse (`L`, `W`, `#`) is never called stale.
 */
export const isStale = (lastPass: LastPass, now: number): boolean => {
  const cron = Cron.parse(lastPass.cron, "UTC")
  if (Either.isLeft(cron)) return false
  let due = new Date(lastPass.finishedAt)
  for (let i = 0; i < MISSED_CRONS_ALLOWED; i++)
    due = Cron.next(cron.right, due)
  return now > due.getTime() + GRACE_MS
}

const json = (status: number, body: unknown) =>
  Response.json(body, {
    status,
    headers: { "cache-control": "no-store" },
  })

/**
 * Time, outcome and counts of the last pass: 200 when it succeeded and is
 * recent, 503 when it failed, is stale or never happened. No event data,
 * no configuration, no error messages (they can name apps).
 */
export const healthz = Effect.gen(function* () {
  const store = yield* EventStore
  const raw = yield* store.getMeta(LAST_PASS_KEY)
  if (raw === undefined) return json(503, { lastPass: null })
  const lastPass = yield* Schema.decode(LastPassJson)(raw)
  const stale = isStale(lastPass, yield* Clock.currentTimeMillis)
  return json(lastPass.ok && !stale ? 200 : 503, {
    lastPass: {
      finishedAt: lastPass.finishedAt,
      ok: lastPass.ok,
      stale,
      counts: lastPass.counts ?? null,
      subrequests: lastPass.subrequests ?? null,
      failure:
        lastPass.failure === undefined
          ? null
          : { kind: lastPass.failure.kind, reason: lastPass.failure.reason },
    },
  })
}).pipe(
  Effect.catchAll((error) =>
    Effect.logError("/healthz could not read the last pass").pipe(
      Effect.annotateLogs("error", error.message),
      Effect.as(json(500, { error: "could not read the last pass" })),
    ),
  ),
)
