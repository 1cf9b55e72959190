import { Clock, Effect } from "effect"
import {
  eventKey,
  exitDetailsOf,
  type Guest,
  type Machine,
  type MachineEvent,
} from "./Domain.ts"
import { EventStore, type MachineRecord, type NewEvent } from "./EventStore.ts"
import type { FlyOrg } from "./FlyEvents.ts"
import { planRuns } from "./Runs.ts"

// What a pass does with one machine of a listing: compare it with what the
// store remembers, fetch the full event list when the embedded tail may
// have dropped some, and store its new events, runs and record.

/** Fly embeds only the newest few events in a machine listing. */
export const EMBEDDED_TAIL = 5

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

/** Where one org's listing of one app left the pass. */
export interface PollContext {
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
export const pollMachine = (
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
