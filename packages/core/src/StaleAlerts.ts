import { Clock, Duration, Effect, Either } from "effect"
import { type Alert, CLAIM_MS, countFailed, keysOf } from "./Alert.ts"
import {
  code,
  type Embed,
  eventEmbed,
  Limits,
  payload,
  truncate,
} from "./DiscordMessage.ts"
import { EventStore } from "./EventStore.ts"
import { type DiscordError, Notifier } from "./Notifier.ts"
import { humanDuration } from "./Pricing.ts"
import { type DiscordRoute, routeFor } from "./Routes.ts"
import { CostSettings, DeliverySettings } from "./Settings.ts"

/** Alerts summed up in one summary; any more go in the next pass's. */
const SUMMARY_BATCH = 5000
/** Alerts named in a summary, oldest first. */
const SUMMARY_LISTED = 10

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
        code(truncate(alert.keys[0]!, 80))
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
 * Alerts older than MAX_ALERT_AGE go out as one summary per route instead
 * of a flood, and are settled only once Discord accepts it. Returns how
 * many it settled.
 */
export const collapseStale = (routes: ReadonlyArray<DiscordRoute>) =>
  Effect.gen(function* () {
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
    const eventKeys = new Set(events.map((event) => event.key))
    const all = [
      ...events.map((event) => ({
        keys: [event.key],
        embed: eventEmbed(event, prices),
        at: event.timestamp,
        route: routeFor(routes, event),
      })),
      ...notices.map((notice) => ({
        keys: [notice.key],
        embed: notice.embed as Embed,
        at: notice.createdAt,
        route: routeFor(routes, notice),
      })),
    ].sort((a, b) => a.at - b.at || a.keys[0]!.localeCompare(b.keys[0]!))
    const split = (alerts: ReadonlyArray<Alert>) => {
      const keys = keysOf(alerts)
      return {
        events: keys.filter((key) => eventKeys.has(key)),
        notices: keys.filter((key) => !eventKeys.has(key)),
      }
    }
    let settled = 0
    let failure: DiscordError | undefined
    for (const route of routes) {
      const alerts = all.filter((alert) => alert.route === route)
      if (alerts.length === 0) continue
      const keys = split(alerts)
      if (failure !== undefined) {
        yield* store.release(keys.events)
        yield* store.releaseNotices(keys.notices)
        continue
      }
      const settle = (why: string) =>
        Effect.gen(function* () {
          const at = yield* Clock.currentTimeMillis
          yield* store.giveUp(keys.events, why, at)
          yield* store.giveUpNotices(keys.notices, why, at)
        })
      const trySend = (listed: boolean) =>
        Effect.either(
          notifier.send(
            payload({
              embeds: [summaryEmbed(alerts, maxAlertAge, { listed })],
            }),
            { webhookUrl: route.webhook, route: route.name },
          ),
        )
      let result = yield* trySend(true)
      if (Either.isLeft(result) && result.left.reason === "Rejected")
        result = yield* trySend(false)
      if (Either.isLeft(result) && result.left.reason !== "Rejected") {
        yield* store.release(keys.events)
        yield* store.releaseNotices(keys.notices)
        yield* countFailed(result.left.reason, alerts.length)
        failure = result.left
        continue
      }
      settled += alerts.length
      if (Either.isLeft(result)) {
        yield* settle(`summary rejected: ${result.left.message}`)
        yield* countFailed("Rejected", alerts.length)
        yield* Effect.logError(
          `Discord rejected the summary of ${plural(alerts.length)} older ` +
            "than MAX_ALERT_AGE: they are given up and recorded as " +
            "undeliverable",
        ).pipe(
          Effect.annotateLogs({
            route: route.name,
            error: result.left.message,
          }),
        )
        continue
      }
      yield* settle("collapsed into a summary after MAX_ALERT_AGE")
      yield* countFailed("Expired", alerts.length)
      yield* Effect.logWarning(
        `${plural(alerts.length)} older than MAX_ALERT_AGE were summed up ` +
          "in one Discord message instead of posted one by one",
      ).pipe(Effect.annotateLogs("route", route.name))
    }
    if (failure !== undefined) return yield* Effect.fail(failure)
    return settled
  })
