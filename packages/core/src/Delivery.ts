import { Clock, Duration, Effect, Either, Metric } from "effect"
import {
  code,
  type Embed,
  type EmbedField,
  eventEmbed,
  EVENTS_PER_EMBED,
  Limits,
  machineEmbed,
  pack,
  payload,
  SUPPRESS_NOTIFICATIONS,
  truncate,
} from "./DiscordMessage.ts"
import {
  EventStore,
  type Notice,
  type PendingEvent,
  type StoreError,
} from "./EventStore.ts"
import * as Metrics from "./Metrics.ts"
import { DiscordError, Notifier } from "./Notifier.ts"
import { humanDuration } from "./Pricing.ts"
import { RetryPolicy } from "./RetryPolicy.ts"
import { type DiscordRoute, routeFor } from "./Routes.ts"
import {
  CostSettings,
  DeliverySettings,
  DiscordSettings,
  FlySettings,
} from "./Settings.ts"

/** How long a pass owns the alerts it is delivering. */
export const CLAIM_MS = 15 * 60 * 1000
const CLAIM_BATCH = 100
const MAX_BATCHES_PER_PASS = 50
/** Alerts summed up in one summary; any more go in the next pass's. */
const SUMMARY_BATCH = 5000
/** Alerts named in a summary, oldest first. */
const SUMMARY_LISTED = 10

/**
 * One embed as delivery sees it, whatever its table: one alert, or several
 * events of one machine sharing an embed.
 */
interface Alert {
  readonly keys: ReadonlyArray<string>
  readonly embed: Embed
  /** When it happened: the Fly event's time, or the notice's creation. */
  readonly at: number
  readonly route: DiscordRoute
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

const keysOf = (alerts: ReadonlyArray<Alert>) =>
  alerts.flatMap((alert) => alert.keys)

const META_PAUSE = "discord_paused_until"

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

/** How one route's messages went. */
interface Outcome {
  readonly sent: number
  /** Why the route stopped for this pass: our pacing, or a failure. */
  readonly stopped?: "Paced" | DiscordError
  /** Keys left unsent when it stopped, still claimed. */
  readonly unsent: ReadonlyArray<string>
}

/**
 * Sends one route's `messages` in order and settles each alert. A message
 * Discord rejects is split into one-embed messages; an embed still rejected
 * is sent once more as a minimal embed, and if that is rejected too, its
 * alerts are given up (recorded, never retried). Every alert takes at most
 * three tries, so this never loops. Any other failure stops the route for
 * this pass; what it did not send stays claimed for the caller to release.
 */
const sendMessages = (
  ledger: Ledger,
  route: DiscordRoute,
  messages: ReadonlyArray<Message>,
) =>
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
      const keys = keysOf(step.alerts)
      const result = yield* Effect.either(
        notifier.send(
          payload({
            embeds,
            ...(step.flags === undefined ? {} : { flags: step.flags }),
          }),
          { webhookUrl: route.webhook, route: route.name },
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
        const note = Effect.annotateLogs({
          route: route.name,
          key: keys[0],
          error: error.message,
        })
        if (step.stage === "batch" && step.alerts.length > 1) {
          yield* Effect.logWarning(
            `Discord rejected a message of ${step.alerts.length} embeds; ` +
              "sending each alone",
          ).pipe(
            Effect.annotateLogs({ route: route.name, error: error.message }),
          )
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
          ).pipe(note)
          steps.unshift({ ...step, stage: "minimal" })
        } else {
          yield* ledger.giveUp(keys, error.message, now)
          yield* countFailed("Rejected", keys.length)
          yield* Effect.logError(
            "Discord rejected an alert even in its minimal form: it is " +
              "given up and recorded as undeliverable",
          ).pipe(note)
        }
        continue
      }
      const unsent = [...keys, ...steps.flatMap((rest) => keysOf(rest.alerts))]
      if (error.reason === "Paced") {
        yield* Effect.logInfo(
          "Discord pacing: the remaining alerts wait for the next pass",
        ).pipe(
          Effect.annotateLogs({ route: route.name, detail: error.message }),
        )
        return { sent, stopped: "Paced", unsent } satisfies Outcome
      }
      yield* countFailed(error.reason, keys.length)
      return { sent, stopped: error, unsent } satisfies Outcome
    }
    return { sent, unsent: [] } satisfies Outcome
  })

/**
 * Alerts older than MAX_ALERT_AGE go out as one summary per route instead
 * of a flood, and are settled only once Discord accepts it. Returns how
 * many it settled.
 */
const collapseStale = (routes: ReadonlyArray<DiscordRoute>) =>
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

/**
 * Several events of one machine in a batch share an embed (up to
 * EVENTS_PER_EMBED), placed where the machine's first event was.
 */
const byMachine = (
  events: ReadonlyArray<PendingEvent>,
): ReadonlyArray<ReadonlyArray<PendingEvent>> => {
  const groups = new Map<string, Array<Array<PendingEvent>>>()
  const order: Array<Array<PendingEvent>> = []
  for (const event of events) {
    const chunks = groups.get(event.machineId) ?? []
    groups.set(event.machineId, chunks)
    const last = chunks.at(-1)
    if (last !== undefined && last.length < EVENTS_PER_EMBED) last.push(event)
    else {
      const chunk = [event]
      chunks.push(chunk)
      order.push(chunk)
    }
  }
  return order
}

/** A pause every webhook obeys, kept in the store across invocations. */
const readPause = Effect.gen(function* () {
  const store = yield* EventStore
  const text = yield* store.getMeta(META_PAUSE)
  const now = yield* Clock.currentTimeMillis
  if (text === undefined) return undefined
  const [until, ...why] = text.split(" ")
  const at = Number(until)
  return Number.isFinite(at) && at > now
    ? { until: at, why: why.join(" ") }
    : undefined
})

const savePause = (error: DiscordError) =>
  Effect.gen(function* () {
    const store = yield* EventStore
    const now = yield* Clock.currentTimeMillis
    if (error.retryAfter === undefined) return
    const until = now + Duration.toMillis(error.retryAfter)
    yield* store.setMeta(META_PAUSE, `${until} ${error.reason}`, now)
  })

/**
 * Sends every undelivered alert, oldest first, each on its app's route,
 * marking each on success. A route that fails stops for this pass and the
 * others go on; the first failure is returned once the rest is done.
 */
export const deliverPending = Effect.gen(function* () {
  const store = yield* EventStore
  const { prices } = yield* CostSettings
  const { routes } = yield* DiscordSettings
  // With several orgs an app's alerts say which org it belongs to.
  const showOrg = (yield* FlySettings).orgs.length > 1
  const paused = yield* readPause
  if (paused !== undefined) {
    const { longestRateLimitWait } = yield* RetryPolicy
    const wait = paused.until - (yield* Clock.currentTimeMillis)
    // As the Notifier does: a wait the runtime allows is waited out.
    if (wait <= Duration.toMillis(longestRateLimitWait))
      yield* Effect.sleep(Duration.millis(wait))
    else
      return yield* Effect.fail(
        new DiscordError({
          reason: paused.why === "Banned" ? "Banned" : "RateLimited",
          detail:
            `every Discord send is paused for ${Math.ceil(wait / 1000)} s ` +
            `more, since an earlier pass (${paused.why}); alerts are kept`,
          retryAfter: Duration.millis(wait),
          everyWebhook: true,
        }),
      )
  }
  yield* collapseStale(routes)
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
  const stopped = new Map<string, "Paced" | DiscordError>()
  let failure: DiscordError | undefined
  let sent = 0

  /** Sends one claimed batch, route by route; holds what a stopped route had. */
  const deliver = (ledger: Ledger, messages: ReadonlyArray<Message>) =>
    Effect.gen(function* () {
      const held: Array<string> = []
      const names = [
        ...new Set(messages.map((message) => message.alerts[0]!.route.name)),
      ]
      for (const name of names) {
        const mine = messages.filter((m) => m.alerts[0]!.route.name === name)
        if (stopped.has(name) || failure?.everyWebhook === true) {
          held.push(...mine.flatMap((message) => keysOf(message.alerts)))
          continue
        }
        const outcome = yield* sendMessages(
          ledger,
          mine[0]!.alerts[0]!.route,
          mine,
        )
        sent += outcome.sent
        held.push(...outcome.unsent)
        if (outcome.stopped === undefined) continue
        stopped.set(name, outcome.stopped)
        if (outcome.stopped !== "Paced") {
          failure ??= outcome.stopped
          if (outcome.stopped.everyWebhook === true)
            yield* savePause(outcome.stopped)
        }
      }
      return held
    })

  const heldEvents: Array<string> = []
  const heldNotices: Array<string> = []
  const pending = Effect.gen(function* () {
    for (let batch = 0; batch < MAX_BATCHES_PER_PASS; batch++) {
      const claimed = yield* store.claimUndelivered({
        now: yield* Clock.currentTimeMillis,
        claimMs: CLAIM_MS,
        limit: CLAIM_BATCH,
      })
      if (claimed.length === 0) break
      const perRoute = new Map<DiscordRoute, Array<PendingEvent>>()
      for (const event of claimed) {
        const route = routeFor(routes, event)
        perRoute.set(route, [...(perRoute.get(route) ?? []), event])
      }
      const messages = [...perRoute].flatMap(([route, mine]) => {
        const alerts = byMachine(mine).map((group): Alert => ({
          keys: group.map((event) => event.key),
          embed: machineEmbed(group, prices, { showOrg }),
          at: group[0]!.timestamp,
          route,
        }))
        return pack(alerts.map((alert) => alert.embed)).map(
          (indexes): Message => ({ alerts: indexes.map((i) => alerts[i]!) }),
        )
      })
      // Interrupted (Ctrl+C, SIGTERM), a pass gives its claims back at once
      // rather than holding the alerts for CLAIM_MS; release skips those
      // already delivered.
      heldEvents.push(
        ...(yield* deliver(events, messages).pipe(
          Effect.onInterrupt(() =>
            Effect.ignore(events.release(claimed.map((event) => event.key))),
          ),
        )),
      )
      if (claimed.length < CLAIM_BATCH) break
    }
    for (let batch = 0; batch < MAX_BATCHES_PER_PASS; batch++) {
      const claimed = yield* store.claimNotices({
        now: yield* Clock.currentTimeMillis,
        claimMs: CLAIM_MS,
        limit: CLAIM_BATCH,
      })
      if (claimed.length === 0) break
      // Per route, digests go quietly (no notification sound); alerts do not.
      const groups = new Map<string, Array<Notice>>()
      for (const notice of claimed) {
        const route = routeFor(routes, notice)
        const id = `${route.name}\u0000${notice.silent}`
        groups.set(id, [...(groups.get(id) ?? []), notice])
      }
      const messages = [...groups.values()].flatMap((group) => {
        const alerts = group.map((notice): Alert => ({
          keys: [notice.key],
          embed: notice.embed as Embed,
          at: notice.createdAt,
          route: routeFor(routes, notice),
        }))
        return pack(alerts.map((alert) => alert.embed)).map(
          (indexes): Message => ({
            alerts: indexes.map((i) => alerts[i]!),
            ...(group[0]!.silent ? { flags: SUPPRESS_NOTIFICATIONS } : {}),
          }),
        )
      })
      heldNotices.push(
        ...(yield* deliver(notices, messages).pipe(
          Effect.onInterrupt(() =>
            Effect.ignore(notices.release(claimed.map((notice) => notice.key))),
          ),
        )),
      )
      if (claimed.length < CLAIM_BATCH) break
    }
  })
  // What a stopped route held stays claimed until the batches are done, so
  // the next batch reaches past it; then it is given back for later passes.
  yield* pending.pipe(
    Effect.ensuring(
      Effect.ignore(
        Effect.zipRight(
          events.release(heldEvents),
          notices.release(heldNotices),
        ),
      ),
    ),
  )
  if (failure !== undefined) return yield* Effect.fail(failure)
  return sent
})
