import { Clock, Duration, Effect, Either, Metric } from "effect"
import {
  code,
  type Embed,
  type EmbedField,
  eventEmbed,
  Limits,
  pack,
  payload,
  SUPPRESS_NOTIFICATIONS,
  truncate,
} from "./DiscordMessage.ts"
import { EventStore, type StoreError } from "./EventStore.ts"
import * as Metrics from "./Metrics.ts"
import { type DiscordError, Notifier } from "./Notifier.ts"
import { humanDuration } from "./Pricing.ts"
import { CostSettings, DeliverySettings } from "./Settings.ts"

/** How long a pass owns the alerts it is delivering. */
export const CLAIM_MS = 15 * 60 * 1000
const CLAIM_BATCH = 100
const MAX_BATCHES_PER_PASS = 50
/** Alerts summed up in one summary; any more go in the next pass's. */
const SUMMARY_BATCH = 5000
/** Alerts named in a summary, oldest first. */
const SUMMARY_LISTED = 10

/** One alert as delivery sees it, whatever its table. */
interface Alert {
  readonly key: string
  readonly embed: Embed
  /** When it happened: the Fly event's time, or the notice's creation. */
  readonly at: number
}

/** Where an alert's outcome is written: `events` or `notices`. */
interface Ledger {
  readonly markDone: (
    keys: ReadonlyArray<string>,
    now: number,
  ) => Effect.Effect<void, StoreError>
  readonly release: (
    keys: ReadonlyArray<string>,
  ) => Effect.Effect<void, StoreError>
  readonly giveUp: (
    keys: ReadonlyArray<string>,
    why: string,
    now: number,
  ) => Effect.Effect<void, StoreError>
}

interface Message {
  readonly alerts: ReadonlyArray<Alert>
  readonly flags?: number
}

const countFailed = (reason: string, alerts: number) =>
  Metric.incrementBy(
    Metric.tagged(Metrics.alertsFailed, "reason", reason),
    alerts,
  )

/**
 * What is left of an embed Discord rejected: its title, the machine and the
 * footer key, each cut well inside Discord's limits.
 */
export const minimalEmbed = (embed: Embed): Embed => {
  const machine = (embed.fields ?? []).find(
    (field: EmbedField) => field.name === "Machine",
  )
  return {
    title: truncate(String(embed.title ?? "alert"), 200),
    color: embed.color,
    fields:
      machine === undefined
        ? []
        : [{ name: "Machine", value: truncate(String(machine.value), 200) }],
    footer: { text: truncate(String(embed.footer?.text ?? ""), 200) },
  }
}

const plural = (count: number) => `${count} alert${count === 1 ? "" : "s"}`
const when = (ms: number) => `<t:${Math.floor(ms / 1000)}:f>`

/** One message standing in for alerts too old to post one by one. */
export const summaryEmbed = (
  alerts: ReadonlyArray<Alert>,
  maxAge: Duration.Duration,
  options: { readonly listed: boolean } = { listed: true },
): Embed => {
  const first = alerts[0]!.at
  const last = alerts.at(-1)!.at
  const budget = Limits.description - Limits.margin
  let description =
    `${plural(alerts.length)} could not be delivered between ` +
    `${when(first)} and ${when(last)}`
  if (options.listed) {
    description += "; the oldest were:"
    for (const alert of alerts.slice(0, SUMMARY_LISTED)) {
      const line =
        `\n• ${when(alert.at)} ${truncate(alert.embed.title, 120)} ` +
        code(truncate(alert.key, 80))
      if (Array.from(description + line).length > budget - 300) break
      description += line
    }
  }
  description +=
    `\n\nThey were older than MAX_ALERT_AGE (${humanDuration(
      Duration.toMillis(maxAge),
    )}) when Discord took messages again, so they are summed up here ` +
    "instead of posted one by one. The monitor's database keeps them all."
  return {
    title: `${plural(alerts.length)} could not be delivered in time`,
    description,
    color: 0xf39c12,
    fields: [],
    footer: {
      text:
        `undelivered ${new Date(first).toISOString()} – ` +
        new Date(last).toISOString(),
    },
  }
}

/**
 * Sends `messages` in order and settles each alert. A message Discord
 * rejects is split into one-embed messages; an embed still rejected is sent
 * once more as a minimal embed, and if that is rejected too, the alert is
 * given up (recorded, never retried). Every alert takes at most three tries,
 * so this never loops. Returns how many alerts went out, and whether our own
 * pacing stopped delivery for this pass; any other failure releases what is
 * left and fails.
 */
const sendMessages = (ledger: Ledger, messages: ReadonlyArray<Message>) =>
  Effect.gen(function* () {
    const notifier = yield* Notifier
    type Step = Message & { readonly stage: "batch" | "single" | "minimal" }
    const steps: Array<Step> = messages.map((m) => ({ ...m, stage: "batch" }))
    let sent = 0
    while (steps.length > 0) {
      const step = steps.shift()!
      const embeds = step.alerts.map((alert) =>
        step.stage === "minimal" ? minimalEmbed(alert.embed) : alert.embed,
      )
      const keys = step.alerts.map((alert) => alert.key)
      const result = yield* Effect.either(
        notifier.send(
          payload({
            embeds,
            ...(step.flags === undefined ? {} : { flags: step.flags }),
          }),
        ),
      )
      const now = yield* Clock.currentTimeMillis
      if (Either.isRight(result)) {
        yield* ledger.markDone(keys, now)
        yield* Metric.incrementBy(Metrics.alertsSent, keys.length)
        sent += keys.length
        continue
      }
      const error = result.left
      if (error.reason === "Rejected") {
        if (step.stage === "batch" && step.alerts.length > 1) {
          yield* Effect.logWarning(
            `Discord rejected a message of ${step.alerts.length} alerts; ` +
              "sending each alone",
          ).pipe(Effect.annotateLogs("error", error.message))
          steps.unshift(
            ...step.alerts.map((alert): Step => ({
              ...step,
              alerts: [alert],
              stage: "single",
            })),
          )
        } else if (step.stage !== "minimal") {
          yield* Effect.logWarning(
            "Discord rejected an alert; sending it once more, shrunk to " +
              "its title, machine and key",
          ).pipe(Effect.annotateLogs({ key: keys[0], error: error.message }))
          steps.unshift({ ...step, stage: "minimal" })
        } else {
          yield* ledger.giveUp(keys, error.message, now)
          yield* countFailed("Rejected", keys.length)
          yield* Effect.logError(
            "Discord rejected an alert even in its minimal form: it is " +
              "given up and recorded as undeliverable",
          ).pipe(Effect.annotateLogs({ key: keys[0], error: error.message }))
        }
        continue
      }
      yield* ledger.release([
        ...keys,
        ...steps.flatMap((rest) => rest.alerts.map((alert) => alert.key)),
      ])
      if (error.reason === "Paced") {
        yield* Effect.logInfo(
          "Discord pacing: the remaining alerts wait for the next pass",
        ).pipe(Effect.annotateLogs("detail", error.message))
        return { sent, paced: true }
      }
      yield* countFailed(error.reason, keys.length)
      return yield* Effect.fail(error)
    }
    return { sent, paced: false }
  })

/**
 * Alerts older than MAX_ALERT_AGE go out as one summary instead of a flood,
 * and are settled only once Discord accepts it. Returns how many it settled.
 */
const collapseStale = Effect.gen(function* () {
  const store = yield* EventStore
  const notifier = yield* Notifier
  const { prices } = yield* CostSettings
  const { maxAlertAge } = yield* DeliverySettings
  const now = yield* Clock.currentTimeMillis
  const claim = {
    now,
    claimMs: CLAIM_MS,
    olderThan: now - Duration.toMillis(maxAlertAge),
    limit: SUMMARY_BATCH,
  }
  const events = yield* store.claimStale(claim)
  const notices = yield* store.claimStaleNotices(claim)
  if (events.length + notices.length === 0) return 0
  const alerts = [
    ...events.map((event) => ({
      key: event.key,
      embed: eventEmbed(event, prices),
      at: event.timestamp,
    })),
    ...notices.map((notice) => ({
      key: notice.key,
      embed: notice.embed as Embed,
      at: notice.createdAt,
    })),
  ].sort((a, b) => a.at - b.at || a.key.localeCompare(b.key))
  const eventKeys = events.map((event) => event.key)
  const noticeKeys = notices.map((notice) => notice.key)
  const settle = (why: string) =>
    Effect.gen(function* () {
      const at = yield* Clock.currentTimeMillis
      yield* store.giveUp(eventKeys, why, at)
      yield* store.giveUpNotices(noticeKeys, why, at)
    })
  const release = Effect.zipRight(
    store.release(eventKeys),
    store.releaseNotices(noticeKeys),
  )
  const trySend = (listed: boolean) =>
    Effect.either(
      notifier.send(
        payload({ embeds: [summaryEmbed(alerts, maxAlertAge, { listed })] }),
      ),
    )
  let result = yield* trySend(true)
  if (Either.isLeft(result) && result.left.reason === "Rejected")
    result = yield* trySend(false)
  if (Either.isLeft(result)) {
    const error: DiscordError = result.left
    if (error.reason !== "Rejected") {
      yield* release
      yield* countFailed(error.reason, alerts.length)
      return yield* Effect.fail(error)
    }
    yield* settle(`summary rejected: ${error.message}`)
    yield* countFailed("Rejected", alerts.length)
    yield* Effect.logError(
      `Discord rejected the summary of ${plural(alerts.length)} older than ` +
        "MAX_ALERT_AGE: they are given up and recorded as undeliverable",
    ).pipe(Effect.annotateLogs("error", error.message))
    return alerts.length
  }
  yield* settle("collapsed into a summary after MAX_ALERT_AGE")
  yield* countFailed("Expired", alerts.length)
  yield* Effect.logWarning(
    `${plural(alerts.length)} older than MAX_ALERT_AGE were summed up in ` +
      "one Discord message instead of posted one by one",
  )
  return alerts.length
})

/** Sends every undelivered alert, oldest first, marking each on success. */
export const deliverPending = Effect.gen(function* () {
  const store = yield* EventStore
  const { prices } = yield* CostSettings
  yield* collapseStale
  const events: Ledger = {
    markDone: store.markNotified,
    release: store.release,
    giveUp: store.giveUp,
  }
  const notices: Ledger = {
    markDone: store.markNoticesNotified,
    release: store.releaseNotices,
    giveUp: store.giveUpNotices,
  }
  let sent = 0
  for (let batch = 0; batch < MAX_BATCHES_PER_PASS; batch++) {
    const claimed = yield* store.claimUndelivered({
      now: yield* Clock.currentTimeMillis,
      claimMs: CLAIM_MS,
      limit: CLAIM_BATCH,
    })
    if (claimed.length === 0) break
    const alerts = claimed.map((event) => ({
      key: event.key,
      embed: eventEmbed(event, prices),
      at: event.timestamp,
    }))
    const messages = pack(alerts.map((alert) => alert.embed)).map(
      (indexes) => ({ alerts: indexes.map((i) => alerts[i]!) }),
    )
    // Interrupted (Ctrl+C, SIGTERM), a pass gives its claims back at once
    // rather than holding the alerts for CLAIM_MS; release skips those
    // already delivered.
    const outcome = yield* sendMessages(events, messages).pipe(
      Effect.onInterrupt(() =>
        Effect.ignore(events.release(claimed.map((event) => event.key))),
      ),
    )
    sent += outcome.sent
    if (outcome.paced) return sent
    if (claimed.length < CLAIM_BATCH) break
  }
  for (let batch = 0; batch < MAX_BATCHES_PER_PASS; batch++) {
    const claimed = yield* store.claimNotices({
      now: yield* Clock.currentTimeMillis,
      claimMs: CLAIM_MS,
      limit: CLAIM_BATCH,
    })
    if (claimed.length === 0) break
    // Digests go quietly (no notification sound); alerts do not.
    const groups = [
      claimed.filter((notice) => !notice.silent),
      claimed.filter((notice) => notice.silent),
    ]
    const messages = groups.flatMap((group) => {
      const alerts = group.map((notice) => ({
        key: notice.key,
        embed: notice.embed as Embed,
        at: notice.createdAt,
      }))
      return pack(alerts.map((alert) => alert.embed)).map(
        (indexes): Message => ({
          alerts: indexes.map((i) => alerts[i]!),
          ...(group[0]!.silent ? { flags: SUPPRESS_NOTIFICATIONS } : {}),
        }),
      )
    })
    const outcome = yield* sendMessages(notices, messages).pipe(
      Effect.onInterrupt(() =>
        Effect.ignore(notices.release(claimed.map((notice) => notice.key))),
      ),
    )
    sent += outcome.sent
    if (outcome.paced) return sent
    if (claimed.length < CLAIM_BATCH) break
  }
  return sent
})
