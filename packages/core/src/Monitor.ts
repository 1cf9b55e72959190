import { Clock, Effect, Either } from "effect"
import { type DiscordPayload, watchingMessage } from "./DiscordMessage.ts"
import {
  eventKey,
  exitDetailsOf,
  type Guest,
  type Machine,
  type MachineEvent,
} from "./Domain.ts"
import { EventStore, type MachineRecord, type NewEvent } from "./EventStore.ts"
import { type FlyApiError, FlyEvents, type FlyOrg } from "./FlyEvents.ts"
import { META_BASELINE, runGuards } from "./Guards.ts"
import {
  BACKFILL_RESERVE,
  fairShares,
  orgKey,
  orgsPerPass,
  selectApps,
  unsuffixedOwner,
} from "./OrgPlan.ts"
import { dailyCleanup, retentionCutoff } from "./Retention.ts"
import { planRuns } from "./Runs.ts"
import { deliverPending } from "./Delivery.ts"
import { Notifier } from "./Notifier.ts"
import { MonitorSettings } from "./Settings.ts"
import { triageSilences } from "./Silences.ts"
import { triageStorms } from "./Storms.ts"

export { CLAIM_MS } from "./Delivery.ts"

/** Fly embeds only the newest few events in a machine listing. */
export const EMBEDDED_TAIL = 5
/** Machine lists fetched at once; Fly limits each app, not the org. */
export const APP_CONCURRENCY = 8

// Each org keeps these under its own key (see orgKey in OrgPlan.ts).
const META_WATCHING = "watching_sent_at"
const META_APP_CURSOR = "app_cursor"
const META_BASELINE_PENDING = "baseline_pending_apps"
/** The next org to list when they take turns. */
const META_ORG_CURSOR = "org_cursor"

export interface PassSummary {
  /** Orgs polled this pass, and those that could not be. */
  readonly orgs: number
  readonly failedOrgs: number
  readonly apps: number
  readonly appsPolled: number
  readonly machines: number
  readonly running: number
  /** Machines whose payload did not decode. */
  readonly skippedMachines: number
  /** Machines left for the next pass because the request budget ran out. */
  readonly deferredMachines: number
  readonly failedApps: number
  readonly newEvents: number
  readonly alertsSent: number
  readonly flyRequests: number
  readonly baseline: boolean
  readonly durationMs: number
}

/**
 * True when events may have happened between what the store last saw and
 * the oldest event Fly still embeds: then the full list is worth a request.
 */
export const tailMayBeTruncated = (
  record: MachineRecord | undefined,
  events: ReadonlyArray<MachineEvent>,
): boolean => {
  if (events.length === 0) return false
  const oldest = Math.min(...events.map((event) => event.timestamp))
  if (record === undefined || record.lastEventAt === null)
    return events.length >= EMBEDDED_TAIL
  return oldest > record.lastEventAt
}

const isNewer = (
  record: MachineRecord | undefined,
  machineId: string,
  event: MachineEvent,
  cutoff: number,
) =>
  // Past the retention an event is history, even for a machine the store
  // no longer remembers (a long-destroyed machine Fly still lists).
  event.timestamp >= cutoff &&
  (record === undefined ||
    record.lastEventAt === null ||
    event.timestamp > record.lastEventAt ||
    (event.timestamp === record.lastEventAt &&
      eventKey(machineId, event) !== record.lastEventKey))

/** What the pass stores of a billing-relevant Fly event. */
export const toNewEvent = (
  app: string,
  machine: Machine,
  event: MachineEvent,
  ranMs: number | undefined,
  org?: string,
): NewEvent => ({
  ranMs,
  ...(org === undefined ? {} : { org }),
  key: eventKey(machine.id, event),
  machineId: machine.id,
  app,
  type: event.type,
  status: event.status,
  source: event.source,
  timestamp: event.timestamp,
  exit: event.type === "exit" ? exitDetailsOf(event.request) : undefined,
})

// Field by field: the store and Fly's payload list a guest's keys in a
// different order, so comparing serialised objects would always differ.
const sameGuest = (a: Guest | undefined, b: Guest | undefined) =>
  a?.cpu_kind === b?.cpu_kind &&
  a?.cpus === b?.cpus &&
  a?.memory_mb === b?.memory_mb &&
  a?.gpu_kind === b?.gpu_kind &&
  a?.gpus === b?.gpus

const sameRecord = (a: MachineRecord | undefined, b: MachineRecord) =>
  a !== undefined &&
  a.app === b.app &&
  a.org === b.org &&
  a.name === b.name &&
  a.region === b.region &&
  a.size === b.size &&
  a.state === b.state &&
  sameGuest(a.guest, b.guest) &&
  a.lastEventKey === b.lastEventKey &&
  a.lastEventAt === b.lastEventAt

/** Applies the machine's run changes; how long each ended run lasted. */
const trackRuns = (options: {
  readonly machine: Machine
  readonly app: string
  readonly open: number | undefined
  readonly fresh: ReadonlyArray<MachineEvent>
  readonly all: ReadonlyArray<MachineEvent>
  readonly now: number
}) =>
  Effect.gen(function* () {
    const store = yield* EventStore
    const ranMs = new Map<string, number>()
    const changes = planRuns({
      open: options.open,
      fresh: options.fresh,
      all: options.all,
      state: options.machine.state,
      now: options.now,
      keyOf: (event) => eventKey(options.machine.id, event),
    })
    for (const change of changes) {
      if (change._tag === "Open") {
        yield* store.openRun(options.machine.id, options.app, change.at)
        continue
      }
      const startedAt = yield* store.closeRun(options.machine.id, change.at)
      if (startedAt !== undefined && change.eventKey !== undefined)
        ranMs.set(change.eventKey, change.at - startedAt)
    }
    return ranMs
  })

/** How close an exit must follow a stop to be the same stop. */
const STOP_FOLD_MS = 60_000

/**
 * A requested stop shows up as a `stop` event and then an `exit`: the exit
 * alone is announced, since it carries the exit code and the run's cost.
 * Maps each folded `stop` event's key to its exit's key.
 */
export const foldedStops = (
  events: ReadonlyArray<NewEvent>,
): ReadonlyMap<string, string> =>
  new Map(
    events.flatMap((stop) => {
      if (stop.type !== "stop") return []
      const exit = events.find(
        (exit) =>
          exit.type === "exit" &&
          exit.exit?.requestedStop === true &&
          exit.timestamp >= stop.timestamp &&
          exit.timestamp - stop.timestamp <= STOP_FOLD_MS,
      )
      return exit === undefined ? [] : [[stop.key, exit.key] as const]
    }),
  )

const newestOf = (events: ReadonlyArray<MachineEvent>) =>
  events.reduce<MachineEvent | undefined>(
    (best, event) =>
      best === undefined || event.timestamp > best.timestamp ? event : best,
    undefined,
  )

/** The machine as the store should remember it after this pass. */
const nextRecord = (
  app: string,
  machine: Machine,
  record: MachineRecord | undefined,
  events: ReadonlyArray<MachineEvent>,
  org: string,
): MachineRecord => {
  const newest = newestOf(events)
  const advance =
    newest !== undefined &&
    (record?.lastEventAt === null ||
      record?.lastEventAt === undefined ||
      newest.timestamp >= record.lastEventAt)
  return {
    id: machine.id,
    app,
    org,
    name: machine.name,
    region: machine.region,
    size: machine.size,
    state: machine.state,
    guest: machine.guest,
    lastEventKey: advance
      ? eventKey(machine.id, newest)
      : (record?.lastEventKey ?? null),
    lastEventAt: advance ? newest.timestamp : (record?.lastEventAt ?? null),
  }
}

const mergeEvents = (
  machineId: string,
  ...lists: ReadonlyArray<ReadonlyArray<MachineEvent>>
): ReadonlyArray<MachineEvent> => {
  const byKey = new Map<string, MachineEvent>()
  for (const list of lists)
    for (const event of list) byKey.set(eventKey(machineId, event), event)
  return [...byKey.values()].sort((a, b) => b.timestamp - a.timestamp)
}

export interface PassOptions {
  /**
   * The most Fly requests this pass may send (a Worker invocation pays for
   * every subrequest). Apps that do not fit wait for the next pass, taken
   * in turn from a cursor kept in the store. Unlimited when absent.
   */
  readonly flyRequestBudget?: number
}

export { BACKFILL_RESERVE, selectApps } from "./OrgPlan.ts"

/** Where one org's listing of one app left the pass. */
interface PollContext {
  readonly org: FlyOrg
  readonly monitored: ReadonlySet<string>
  readonly known: ReadonlyMap<string, MachineRecord>
  readonly openRuns: ReadonlyMap<string, number>
  readonly cutoff: number
  /** Fly requests left for full event lists; false once spent. */
  readonly mayBackfill: Effect.Effect<boolean>
}

/**
 * Stores what is new on one machine: its run changes, its billing-relevant
 * events (announced, or only recorded on the app's first listing) and its
 * record. Whether it was left for the next pass for want of requests.
 */
const pollMachine = (
  context: PollContext,
  app: string,
  machine: Machine,
  recordOnly: boolean,
) =>
  Effect.gen(function* () {
    const store = yield* EventStore
    const { org } = context
    const now = yield* Clock.currentTimeMillis
    const record = context.known.get(machine.id)
    let events = machine.events
    if (!recordOnly && tailMayBeTruncated(record, events)) {
      // Left untouched, the machine is compared afresh next pass.
      if (!(yield* context.mayBackfill))
        return { deferred: true, newEvents: 0 } as const
      const full = yield* org.listEvents(app, machine.id).pipe(
        Effect.tapError((error) =>
          Effect.logWarning(
            "could not fetch the full event list; using the embedded tail",
          ).pipe(
            Effect.annotateLogs({
              app,
              machine: machine.id,
              error: error.message,
            }),
          ),
        ),
        Effect.orElseSucceed((): ReadonlyArray<MachineEvent> => []),
      )
      events = mergeEvents(machine.id, events, full)
    }
    const fresh = events.filter((event) =>
      isNewer(record, machine.id, event, context.cutoff),
    )
    const ranMs = yield* trackRuns({
      machine,
      app,
      open: context.openRuns.get(machine.id),
      // On the first pass history is not replayed: only what runs now.
      fresh: recordOnly ? [] : fresh,
      all: events,
      now,
    })
    const relevant = fresh
      .filter((event) => context.monitored.has(event.type))
      .map((event) =>
        toNewEvent(
          app,
          machine,
          event,
          ranMs.get(eventKey(machine.id, event)),
          org.slug,
        ),
      )
    const folded = foldedStops(relevant)
    // The stop ended the run; its exit is what gets announced.
    const announced = relevant
      .filter((event) => !folded.has(event.key))
      .map((event) => {
        const stop = relevant.find(
          (other) =>
            folded.get(other.key) === event.key && other.ranMs !== undefined,
        )
        return stop === undefined || event.ranMs !== undefined
          ? event
          : {
              ...event,
              ranMs: stop.ranMs! + (event.timestamp - stop.timestamp),
            }
      })
    let newEvents = 0
    if (announced.length > 0) {
      const inserted = yield* store.insertEvents(announced, {
        now,
        baseline: recordOnly,
      })
      if (!recordOnly) newEvents = inserted.length
    }
    if (folded.size > 0)
      yield* store.insertEvents(
        relevant.filter((event) => folded.has(event.key)),
        { now, baseline: true },
      )
    // A run whose end is announced needs no separate "resolved" note:
    // the stop or exit alert says how long it ran and what it cost.
    for (const event of announced)
      if (event.ranMs !== undefined && !recordOnly)
        yield* store.updateRun(
          {
            machineId: machine.id,
            startedAt: event.timestamp - event.ranMs,
          },
          { resolvedAt: now },
        )
    const next = nextRecord(app, machine, record, events, org.slug)
    if (!sameRecord(record, next)) yield* store.saveMachine(next, now)
    return { deferred: false, newEvents } as const
  })

const isRejected = (error: FlyApiError) =>
  error.reason === "Unauthorized" || error.reason === "Forbidden"

/** One org's part of a pass. */
interface OrgOutcome {
  readonly slug: string
  readonly apps: number
  readonly appsPolled: number
  readonly machines: number
  readonly running: number
  readonly skippedMachines: number
  readonly deferredMachines: number
  readonly failedApps: number
  readonly newEvents: number
  readonly baseline: boolean
}

/**
 * One poll pass: list each org's machines, store billing-relevant events
 * not seen before, and deliver every alert not yet accepted by Discord.
 * An org that cannot be polled (token rejected, org unknown, Fly failing
 * for it) does not hold up the others; the pass then fails with its error
 * once the others' alerts are out. When no org could be polled, it fails
 * at once, as there is nothing new to deliver.
 */
export const runPassWith = (options: PassOptions) =>
  Effect.gen(function* () {
    const startedAt = yield* Clock.currentTimeMillis
    const { monitoredEvents } = yield* MonitorSettings
    const monitored = new Set(monitoredEvents)
    const fly = yield* FlyEvents
    const store = yield* EventStore
    const notifier = yield* Notifier
    const requestsBefore = yield* fly.requestsMade
    const budget = options.flyRequestBudget ?? Number.POSITIVE_INFINITY
    const flyRequests = Effect.map(fly.requestsMade, (n) => n - requestsBefore)
    const several = fly.orgs.length > 1

    const watchedBefore = (yield* store.getMeta(META_BASELINE)) !== undefined
    const cutoff = yield* retentionCutoff
    const known = yield* store.machines()
    const openRuns = new Map(
      (yield* store.openRuns()).map((run) => [run.machineId, run.startedAt]),
    )

    // More orgs than one budget can list take turns, like apps do.
    const orgCursor = several
      ? yield* store.getMeta(META_ORG_CURSOR)
      : undefined
    const orgTurn = selectApps(
      fly.orgs.map((org) => org.slug),
      orgCursor,
      orgsPerPass(budget),
    )
    const orgs = fly.orgs.filter((org) => orgTurn.apps.includes(org.slug))

    const failures: Array<{
      readonly org: string
      readonly error: FlyApiError
    }> = []
    const appLists = yield* Effect.forEach(
      orgs,
      (org) =>
        org.listApps().pipe(
          Effect.map((apps) => ({ org, apps })),
          Effect.either,
        ),
      { concurrency: APP_CONCURRENCY },
    )
    const listed = appLists.flatMap((result, i) => {
      if (Either.isRight(result)) return [result.right]
      failures.push({ org: orgs[i]!.slug, error: result.left })
      return []
    })

    const now0 = yield* Clock.currentTimeMillis
    const owner = yield* unsuffixedOwner({
      orgs: fly.orgs.map((org) => org.slug),
      listed: listed.map(({ org, apps }) => ({
        slug: org.slug,
        apps: apps.map((app) => app.name),
      })),
      known,
      now: now0,
    })

    // Per org: its first listing is recorded, not announced, and so is the
    // first listing of each app it has not yet polled since it started
    // watching (with a request budget the first pass reaches only some
    // apps, and a failed listing reaches none).
    const plans = yield* Effect.forEach(listed, ({ org, apps }) =>
      Effect.gen(function* () {
        const key = orgKey(org.slug, owner)
        const baseline =
          (yield* store.getMeta(key(META_BASELINE))) === undefined
        const pendingText = yield* store.getMeta(key(META_BASELINE_PENDING))
        const cursor = yield* store.getMeta(key(META_APP_CURSOR))
        return { org, apps, key, baseline, pendingText, cursor }
      }),
    )
    const shares = fairShares(
      plans.map((plan) => plan.apps.length),
      Math.max(1, Math.floor(budget - orgs.length - BACKFILL_RESERVE)),
    )
    const selections = plans.map((plan, i) =>
      selectApps(
        plan.apps.map((app) => app.name),
        plan.cursor,
        Math.max(1, shares[i]!),
      ),
    )
    const listings = yield* Effect.forEach(
      plans.flatMap((plan, i) =>
        selections[i]!.apps.map((app) => ({ org: plan.org, app })),
      ),
      ({ org, app }) =>
        org.listMachines(app).pipe(
          Effect.map((listing) => ({ org: org.slug, app, ...listing })),
          Effect.mapError((error) => ({ org: org.slug, app, error })),
          Effect.either,
        ),
      { concurrency: APP_CONCURRENCY },
    )

    const outcomes: Array<OrgOutcome> = []
    /** "Now watching org …", once per org. */
    const greetings: Array<{
      readonly key: string
      readonly message: DiscordPayload
    }> = []
    for (const [i, plan] of plans.entries()) {
      const { org, key } = plan
      const mine = listings.filter((listing) =>
        Either.isRight(listing)
          ? listing.right.org === org.slug
          : listing.left.org === org.slug,
      )
      // A token refused on any app stops the org for this pass: its
      // other apps wait for the next one.
      const rejected = mine.find(
        (listing) => Either.isLeft(listing) && isRejected(listing.left.error),
      )
      if (rejected !== undefined && Either.isLeft(rejected)) {
        failures.push({ org: org.slug, error: rejected.left.error })
        continue
      }
      const unbaselined = new Set<string>(
        plan.baseline
          ? plan.apps.map((app) => app.name)
          : plan.pendingText === undefined
            ? []
            : (JSON.parse(plan.pendingText) as Array<string>),
      )
      const context: PollContext = {
        org,
        monitored,
        known,
        openRuns,
        cutoff,
        mayBackfill: Effect.map(flyRequests, (n) => n < budget),
      }
      let machines = 0
      let running = 0
      let skippedMachines = 0
      let deferredMachines = 0
      let failedApps = 0
      let newEvents = 0
      for (const listing of mine) {
        if (Either.isLeft(listing)) {
          failedApps++
          yield* Effect.logWarning(
            "skipping an app this pass: its machines could not be listed",
          ).pipe(
            Effect.annotateLogs({
              ...(several ? { org: org.slug } : {}),
              error: listing.left.error.message,
            }),
          )
          continue
        }
        const { app } = listing.right
        const recordOnly = unbaselined.delete(app)
        skippedMachines += listing.right.skipped.length
        for (const machine of listing.right.machines) {
          if (machine.state !== "destroyed") machines++
          if (machine.state === "started") running++
          const polled = yield* pollMachine(context, app, machine, recordOnly)
          if (polled.deferred) deferredMachines++
          newEvents += polled.newEvents
        }
      }

      const now = yield* Clock.currentTimeMillis
      if (plan.baseline)
        yield* store.setMeta(key(META_BASELINE), String(now), now)
      const stillPending = JSON.stringify([...unbaselined].sort())
      if (stillPending !== (plan.pendingText ?? "[]"))
        yield* store.setMeta(key(META_BASELINE_PENDING), stillPending, now)
      const selection = selections[i]!
      if ((selection.next ?? "") !== (plan.cursor ?? ""))
        yield* store.setMeta(key(META_APP_CURSOR), selection.next ?? "", now)
      greetings.push({
        key: key(META_WATCHING),
        message: watchingMessage({
          org: org.slug,
          apps: plan.apps.length,
          appsPolled: selection.apps.length - failedApps,
          machines,
          running,
          monitored: monitoredEvents,
        }),
      })
      outcomes.push({
        slug: org.slug,
        apps: plan.apps.length,
        appsPolled: selection.apps.length,
        machines,
        running,
        skippedMachines,
        deferredMachines,
        failedApps,
        newEvents,
        baseline: plan.baseline,
      })
    }

    // In the order the orgs are configured, so the pass fails the same
    // way every time.
    const order = fly.orgs.map((org) => org.slug)
    failures.sort((a, b) => order.indexOf(a.org) - order.indexOf(b.org))
    if (several)
      for (const failure of failures)
        yield* Effect.logWarning(
          "could not poll an org this pass; the other orgs go on",
        ).pipe(
          Effect.annotateLogs({
            org: failure.org,
            error: failure.error.message,
          }),
        )
    if (outcomes.length === 0 && failures.length > 0)
      return yield* Effect.fail(failures[0]!.error)

    const now = yield* Clock.currentTimeMillis
    // When the monitor started watching, whatever the org: the digest
    // covers only days from then on.
    if (!watchedBefore && outcomes.length > 0)
      yield* store.claimMeta(META_BASELINE, String(now), now)
    if ((orgTurn.next ?? "") !== (orgCursor ?? "") && several)
      yield* store.setMeta(META_ORG_CURSOR, orgTurn.next ?? "", now)
    // Claimed before sending, so two first passes at once send it once; a
    // failed send gives the claim back for the next pass.
    for (const greeting of greetings)
      if (yield* store.claimMeta(greeting.key, String(now), now))
        yield* notifier
          .send(greeting.message)
          .pipe(Effect.tapError(() => store.deleteMeta(greeting.key)))

    yield* dailyCleanup
    yield* runGuards
    yield* triageSilences
    yield* triageStorms
    const delivered = yield* Effect.either(deliverPending)
    const total = (field: keyof Omit<OrgOutcome, "slug" | "baseline">) =>
      outcomes.reduce((sum, outcome) => sum + outcome[field], 0)
    const summary: PassSummary = {
      orgs: outcomes.length,
      failedOrgs: failures.length,
      apps: total("apps"),
      appsPolled: total("appsPolled"),
      machines: total("machines"),
      running: total("running"),
      skippedMachines: total("skippedMachines"),
      deferredMachines: total("deferredMachines"),
      failedApps: total("failedApps"),
      newEvents: total("newEvents"),
      alertsSent: Either.isRight(delivered) ? delivered.right : 0,
      flyRequests: yield* flyRequests,
      baseline: outcomes.some((outcome) => outcome.baseline),
      durationMs: (yield* Clock.currentTimeMillis) - startedAt,
    }
    yield* Effect.log(
      Either.isLeft(delivered)
        ? "pass done, delivery failed"
        : failures.length > 0
          ? "pass done, an org could not be polled"
          : "pass done",
    ).pipe(
      Effect.annotateLogs({
        ...(several
          ? { orgs: summary.orgs, failed_orgs: summary.failedOrgs }
          : {}),
        apps: summary.apps,
        apps_polled: summary.appsPolled,
        machines: summary.machines,
        running: summary.running,
        new_events: summary.newEvents,
        alerts_sent: summary.alertsSent,
        skipped_machines: summary.skippedMachines,
        deferred_machines: summary.deferredMachines,
        failed_apps: summary.failedApps,
        fly_requests: summary.flyRequests,
        baseline: summary.baseline,
        duration_ms: summary.durationMs,
      }),
    )
    // An org's failure first: it is what stopped alerts from being seen.
    if (failures.length > 0) return yield* Effect.fail(failures[0]!.error)
    if (Either.isLeft(delivered)) return yield* Effect.fail(delivered.left)
    return summary
  }).pipe(Effect.withSpan("Monitor.runPass"))

export const runPass = runPassWith({})
