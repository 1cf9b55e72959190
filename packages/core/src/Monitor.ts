import { Clock, Effect, Either } from "effect"
import { watchingMessage } from "./DiscordMessage.ts"
import {
  eventKey,
  exitDetailsOf,
  type Guest,
  type Machine,
  type MachineEvent,
} from "./Domain.ts"
import { EventStore, type MachineRecord, type NewEvent } from "./EventStore.ts"
import { FlyEvents } from "./FlyEvents.ts"
import { META_BASELINE, runGuards } from "./Guards.ts"
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

const META_WATCHING = "watching_sent_at"
const META_APP_CURSOR = "app_cursor"
const META_BASELINE_PENDING = "baseline_pending_apps"

export interface PassSummary {
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
): NewEvent => ({
  ranMs,
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

/** Requests kept back from app listings for full event lists. */
export const BACKFILL_RESERVE = 5

/**
 * The apps to poll this pass, in name order from `cursor` and wrapping
 * round, and the cursor for the next pass (undefined once all fit).
 */
export const selectApps = (
  names: ReadonlyArray<string>,
  cursor: string | undefined,
  count: number,
): {
  readonly apps: ReadonlyArray<string>
  readonly next: string | undefined
} => {
  const sorted = [...names].sort()
  if (count >= sorted.length) return { apps: sorted, next: undefined }
  const found =
    cursor === undefined ? 0 : sorted.findIndex((name) => name >= cursor)
  const start = found === -1 ? 0 : found
  const apps = Array.from(
    { length: count },
    (_, i) => sorted[(start + i) % sorted.length]!,
  )
  return { apps, next: sorted[(start + count) % sorted.length] }
}

/**
 * One poll pass: list the org's machines, store billing-relevant events not
 * seen before, and deliver every alert not yet accepted by Discord.
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

    const baseline = (yield* store.getMeta(META_BASELINE)) === undefined
    const cutoff = yield* retentionCutoff
    const known = yield* store.machines()
    const openRuns = new Map(
      (yield* store.openRuns()).map((run) => [run.machineId, run.startedAt]),
    )
    const allApps = yield* fly.listApps()
    // Apps the monitor has not yet polled since it started watching: their
    // first listing is recorded, not announced. With a request budget the
    // first pass reaches only some apps, and a failed listing reaches none.
    const pendingText = yield* store.getMeta(META_BASELINE_PENDING)
    const unbaselined = new Set<string>(
      baseline
        ? allApps.map((app) => app.name)
        : pendingText === undefined
          ? []
          : (JSON.parse(pendingText) as Array<string>),
    )
    const cursor = yield* store.getMeta(META_APP_CURSOR)
    const selection = selectApps(
      allApps.map((app) => app.name),
      cursor,
      Math.max(1, Math.floor(budget - 1 - BACKFILL_RESERVE)),
    )
    const listings = yield* Effect.forEach(
      selection.apps,
      (app) =>
        fly.listMachines(app).pipe(
          Effect.map((listing) => ({ app, ...listing })),
          Effect.either,
        ),
      { concurrency: APP_CONCURRENCY },
    )

    let machines = 0
    let running = 0
    let skippedMachines = 0
    let deferredMachines = 0
    let failedApps = 0
    let newEvents = 0
    for (const listing of listings) {
      if (Either.isLeft(listing)) {
        const error = listing.left
        if (error.reason === "Unauthorized" || error.reason === "Forbidden")
          return yield* Effect.fail(error)
        failedApps++
        yield* Effect.logWarning(
          "skipping an app this pass: its machines could not be listed",
        ).pipe(Effect.annotateLogs("error", error.message))
        continue
      }
      const { app } = listing.right
      const recordOnly = unbaselined.delete(app)
      skippedMachines += listing.right.skipped.length
      for (const machine of listing.right.machines) {
        const now = yield* Clock.currentTimeMillis
        if (machine.state !== "destroyed") machines++
        if (machine.state === "started") running++
        const record = known.get(machine.id)
        let events = machine.events
        if (!recordOnly && tailMayBeTruncated(record, events)) {
          if ((yield* flyRequests) >= budget) {
            // Left untouched, the machine is compared afresh next pass.
            deferredMachines++
            continue
          }
          const full = yield* fly.listEvents(app, machine.id).pipe(
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
          isNewer(record, machine.id, event, cutoff),
        )
        const ranMs = yield* trackRuns({
          machine,
          app,
          open: openRuns.get(machine.id),
          // On the first pass history is not replayed: only what runs now.
          fresh: recordOnly ? [] : fresh,
          all: events,
          now,
        })
        const relevant = fresh
          .filter((event) => monitored.has(event.type))
          .map((event) =>
            toNewEvent(
              app,
              machine,
              event,
              ranMs.get(eventKey(machine.id, event)),
            ),
          )
        const folded = foldedStops(relevant)
        // The stop ended the run; its exit is what gets announced.
        const announced = relevant
          .filter((event) => !folded.has(event.key))
          .map((event) => {
            const stop = relevant.find(
              (other) =>
                folded.get(other.key) === event.key &&
                other.ranMs !== undefined,
            )
            return stop === undefined || event.ranMs !== undefined
              ? event
              : {
                  ...event,
                  ranMs: stop.ranMs! + (event.timestamp - stop.timestamp),
                }
          })
        if (announced.length > 0) {
          const inserted = yield* store.insertEvents(announced, {
            now,
            baseline: recordOnly,
          })
          if (!recordOnly) newEvents += inserted.length
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
        const next = nextRecord(app, machine, record, events)
        if (!sameRecord(record, next)) yield* store.saveMachine(next, now)
      }
    }

    const now = yield* Clock.currentTimeMillis
    if (baseline) yield* store.setMeta(META_BASELINE, String(now), now)
    const stillPending = JSON.stringify([...unbaselined].sort())
    if (stillPending !== (pendingText ?? "[]"))
      yield* store.setMeta(META_BASELINE_PENDING, stillPending, now)
    if ((selection.next ?? "") !== (cursor ?? ""))
      yield* store.setMeta(META_APP_CURSOR, selection.next ?? "", now)
    // Claimed before sending, so two first passes at once send it once; a
    // failed send gives the claim back for the next pass.
    if (yield* store.claimMeta(META_WATCHING, String(now), now)) {
      yield* notifier
        .send(
          watchingMessage({
            org: fly.orgSlug,
            apps: allApps.length,
            appsPolled: selection.apps.length - failedApps,
            machines,
            running,
            monitored: monitoredEvents,
          }),
        )
        .pipe(Effect.tapError(() => store.deleteMeta(META_WATCHING)))
    }

    yield* dailyCleanup
    yield* runGuards
    yield* triageSilences
    yield* triageStorms
    const delivered = yield* Effect.either(deliverPending)
    const summary: PassSummary = {
      apps: allApps.length,
      appsPolled: selection.apps.length,
      machines,
      running,
      skippedMachines,
      deferredMachines,
      failedApps,
      newEvents,
      alertsSent: Either.isRight(delivered) ? delivered.right : 0,
      flyRequests: yield* flyRequests,
      baseline,
      durationMs: (yield* Clock.currentTimeMillis) - startedAt,
    }
    yield* Effect.log(
      Either.isRight(delivered) ? "pass done" : "pass done, delivery failed",
    ).pipe(
      Effect.annotateLogs({
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
    if (Either.isLeft(delivered)) return yield* Effect.fail(delivered.left)
    return summary
  }).pipe(Effect.withSpan("Monitor.runPass"))

export const runPass = runPassWith({})
