import { Clock, Duration, Effect, Either, Metric, Schema } from "effect"
import {
  code,
  escapeMarkdown,
  Limits,
  payload,
  truncate,
} from "./DiscordMessage.ts"
import { EventStore } from "./EventStore.ts"
import * as Metrics from "./Metrics.ts"
import { runPassWith, type PassOptions, type PassSummary } from "./Monitor.ts"
import { Notifier } from "./Notifier.ts"
import { humanDuration } from "./Pricing.ts"
import { OutageSettings } from "./Settings.ts"

// A monitor that fails quietly is worse than none. When passes fail several
// times in a row (token revoked, org renamed, Fly down), one Discord alert
// says why, a reminder follows every few hours at most, and a note says when
// monitoring recovered. State lives in the store, so restarts change
// nothing. When Discord itself is what fails, only the log can say so.

const META_OUTAGE = "outage"

const Outage = Schema.parseJson(
  Schema.Struct({
    failures: Schema.Number,
    since: Schema.Number,
    reason: Schema.String,
    message: Schema.String,
    alertedAt: Schema.NullOr(Schema.Number),
  }),
)
type Outage = typeof Outage.Type

/** What a pass failure is, in a word, and what it says. */
export const describeFailure = (
  error: unknown,
): { readonly reason: string; readonly message: string } => {
  if (typeof error === "object" && error !== null && "_tag" in error) {
    const tagged = error as { _tag: string; reason?: string; message?: string }
    return {
      reason: `${tagged._tag}${tagged.reason ? `/${tagged.reason}` : ""}`,
      message: tagged.message ?? tagged._tag,
    }
  }
  return { reason: "Unknown", message: String(error) }
}

const hint = (reason: string): string => {
  if (
    reason === "DiscordError/WebhookGone" ||
    reason === "DiscordError/Unauthorized"
  )
    return "Discord refused a webhook (deleted, or its token is wrong): create a new one and update DISCORD_WEBHOOK_URL, or the route of DISCORD_ROUTES the last error names."
  if (reason.startsWith("DiscordError"))
    return "Discord is not taking messages right now; the log says why."
  if (reason.includes("Unauthorized") || reason.includes("Forbidden"))
    return "Fly rejected the token: create one with `fly tokens create readonly` and set FLY_API_TOKEN (or that org's token in FLY_ORGS)."
  if (reason === "FlyApiError/NotFound")
    return "Fly does not know the org: check FLY_ORG_SLUG (or the slugs in FLY_ORGS) against `fly orgs list`."
  if (reason.startsWith("FlyApiError"))
    return "The Fly Machines API is failing or unreachable; alerts resume when it answers."
  if (reason.startsWith("StoreError"))
    return "The monitor's database is failing: check its disk or D1 binding."
  return "See the monitor's log for details."
}

/** What the failure stops, as far as the error tells. */
const situation = (outage: Outage): string => {
  if (outage.reason.startsWith("DiscordError"))
    return "Machine events are checked, but alerts are not reaching Discord: they wait in the database and go out once it takes them again."
  const org = /for org (\S+)/.exec(outage.message)?.[1]
  return org === undefined
    ? "No machine events are being checked."
    : `Machine events of org ${code(org)} are not being checked; other orgs are.`
}

const outageAlert = (outage: Outage, now: number, reminder: boolean) =>
  payload({
    embeds: [
      {
        title: reminder
          ? `Fly Machine Monitor is still failing (${outage.failures} passes)`
          : `Fly Machine Monitor: ${outage.failures} passes failed in a row`,
        color: 0xe74c3c,
        description: truncate(
          `${situation(outage)} ${hint(outage.reason)}`,
          Limits.description,
        ),
        fields: [
          { name: "Failing for", value: humanDuration(now - outage.since) },
          { name: "Reason", value: code(outage.reason) },
          {
            name: "Last error",
            value: truncate(escapeMarkdown(outage.message), 900),
          },
        ],
        footer: {
          text: `outage since ${new Date(outage.since).toISOString()}`,
        },
      },
    ],
  })

const recoveredNote = (outage: Outage, now: number) =>
  payload({
    embeds: [
      {
        title: "Fly Machine Monitor recovered",
        color: 0x2ecc71,
        description: `Monitoring works again after ${humanDuration(
          now - outage.since,
        )} and ${outage.failures} failed passes. Machine events from that time, if any, are announced above.`,
        fields: [],
        footer: {
          text: `outage since ${new Date(outage.since).toISOString()}`,
        },
      },
    ],
  })

/** Keeps the failure streak and sends the outage alert, reminder or note. */
export const recordOutcome = (result: Either.Either<PassSummary, unknown>) =>
  Effect.gen(function* () {
    const store = yield* EventStore
    const notifier = yield* Notifier
    const settings = yield* OutageSettings
    const now = yield* Clock.currentTimeMillis
    const stored = yield* store.getMeta(META_OUTAGE)
    const outage =
      stored === undefined
        ? undefined
        : Either.getOrUndefined(Schema.decodeEither(Outage)(stored))
    const save = (next: Outage) =>
      store.setMeta(META_OUTAGE, Schema.encodeSync(Outage)(next), now)

    if (Either.isRight(result)) {
      if (outage === undefined) return
      if (outage.alertedAt !== null) {
        const sent = yield* Effect.either(
          notifier.send(recoveredNote(outage, now)),
        )
        // Keep the streak until the note is out; the next pass tries again.
        if (Either.isLeft(sent)) return
      }
      yield* store.deleteMeta(META_OUTAGE)
      return
    }

    const failure = describeFailure(result.left)
    const next: Outage = {
      failures: (outage?.failures ?? 0) + 1,
      since: outage?.since ?? now,
      reason: failure.reason,
      message: failure.message,
      alertedAt: outage?.alertedAt ?? null,
    }
    const due =
      next.failures >= settings.alertAfter &&
      (next.alertedAt === null ||
        now - next.alertedAt >= Duration.toMillis(settings.remindEvery))
    if (due) {
      const sent = yield* Effect.either(
        notifier.send(outageAlert(next, now, next.alertedAt !== null)),
      )
      if (Either.isRight(sent)) yield* save({ ...next, alertedAt: now })
      else {
        yield* Effect.logError(
          "could not alert Discord about failing passes: Discord is failing too",
        ).pipe(Effect.annotateLogs("error", sent.left.message))
        yield* save(next)
      }
      return
    }
    yield* save(next)
  }).pipe(
    Effect.catchAll((error) =>
      Effect.logError("could not record the pass outcome").pipe(
        Effect.annotateLogs("error", describeFailure(error).message),
      ),
    ),
  )

/**
 * One pass, with its outcome recorded: what the runtimes run. Fails as the
 * pass failed, after the outage bookkeeping.
 */
export const runPassAndReport = (options: PassOptions = {}) =>
  Effect.gen(function* () {
    const started = yield* Clock.currentTimeMillis
    const result = yield* Effect.either(runPassWith(options))
    const finished = yield* Clock.currentTimeMillis
    yield* Metric.increment(Metrics.passes)
    yield* Metric.update(Metrics.passDuration, (finished - started) / 1000)
    if (Either.isRight(result)) {
      yield* Metric.incrementBy(Metrics.eventsSeen, result.right.newEvents)
      yield* Metric.set(Metrics.lastSuccess, finished / 1000)
    } else {
      const { reason } = describeFailure(result.left)
      yield* Metric.increment(
        Metric.tagged(Metrics.passFailures, "reason", reason),
      )
    }
    yield* recordOutcome(result)
    yield* countRows
    return yield* result
  })

const countRows = Effect.gen(function* () {
  const store = yield* EventStore
  const rows = yield* store.rowCounts()
  for (const [table, count] of Object.entries(rows))
    yield* Metric.set(Metric.tagged(Metrics.storeRows, "table", table), count)
}).pipe(Effect.catchAll(() => Effect.void))
