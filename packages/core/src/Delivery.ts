import { Clock, Duration, Effect, Either, Metric } from "effect"
import { type Alert, CLAIM_MS, countFailed, keysOf } from "./Alert.ts"
import { collapseStale } from "./StaleAlerts.ts"

export { CLAIM_MS }
import {
  type Embed,
  type EmbedField,
  EVENTS_PER_EMBED,
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
import { RetryPolicy } from "./RetryPolicy.ts"
import { type DiscordRoute, routeFor } from "./Routes.ts"
import { CostSettings, DiscordSettings, FlySettings } from "./Settings.ts"

const CLAIM_BATCH = 100
const MAX_BATCHES_PER_PASS = 50

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

const META_PAUSE = "discord_paused_until"

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

/** With several routes, a failure says which one failed. */
const namingRoute = (error: DiscordError, route: string) =>
  new DiscordError({
    reason: error.reason,
    detail: `route ${route}: ${error.detail}`,
    ...(error.status === undefined ? {} : { status: error.status }),
    ...(error.retryAfter === undefined ? {} : { retryAfter: error.retryAfter }),
    ...(error.everyWebhook === undefined
      ? {}
      : { everyWebhook: error.everyWebhook }),
  })

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

/** What a delivery did: alerts sent, and the first route failure if any. */
export interface Delivered {
  readonly sent: number
  readonly failure: DiscordError | undefined
}

/**
 * Sends every undelivered alert, oldest first, each on its app's route,
 * marking each on success. A route that fails stops for this pass and the
 * others go on; the first failure is returned once the rest is done.
 */
export const deliverReport = Effect.gen(function* () {
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
      return {
        sent: 0,
        failure: new DiscordError({
          reason: paused.why === "Banned" ? "Banned" : "RateLimited",
          detail:
            `every Discord send is paused for ${Math.ceil(wait / 1000)} s ` +
            `more, since an earlier pass (${paused.why}); alerts are kept`,
          retryAfter: Duration.millis(wait),
          everyWebhook: true,
        }),
      } satisfies Delivered
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
          failure ??=
            routes.length > 1
              ? namingRoute(outcome.stopped, name)
              : outcome.stopped
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
        const mine = perRoute.get(route)
        if (mine === undefined) perRoute.set(route, [event])
        else mine.push(event)
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
      const groups = new Map<
        string,
        { route: DiscordRoute; silent: boolean; notices: Array<Notice> }
      >()
      for (const notice of claimed) {
        const route = routeFor(routes, notice)
        const id = `${route.name}\u0000${notice.silent}`
        const group = groups.get(id)
        if (group === undefined)
          groups.set(id, { route, silent: notice.silent, notices: [notice] })
        else group.notices.push(notice)
      }
      const messages = [...groups.values()].flatMap((group) => {
        const alerts = group.notices.map((notice): Alert => ({
          keys: [notice.key],
          embed: notice.embed as Embed,
          at: notice.createdAt,
          route: group.route,
        }))
        return pack(alerts.map((alert) => alert.embed)).map(
          (indexes): Message => ({
            alerts: indexes.map((i) => alerts[i]!),
            ...(group.silent ? { flags: SUPPRESS_NOTIFICATIONS } : {}),
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
  return { sent, failure } satisfies Delivered
})

/** `deliverReport`, failing with the first route failure. */
export const deliverPending = Effect.flatMap(deliverReport, (delivered) =>
  delivered.failure === undefined
    ? Effect.succeed(delivered.sent)
    : Effect.fail(delivered.failure),
)
