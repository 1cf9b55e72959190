import {
  Clock,
  Config,
  ConfigError,
  Duration,
  Effect,
  Either,
  Option,
} from "effect"
import { type Embed, escapeMarkdown } from "./DiscordMessage.ts"
import { EventStore, type MachineRecord } from "./EventStore.ts"
import { estimate, usd } from "./Pricing.ts"
import { CostSettings, durationVar, RetentionSettings } from "./Settings.ts"
import { calmEmbed, stormEmbed, stormUpdateEmbed } from "./StormNotices.ts"
import { type StormRow, stormTable } from "./StormTable.ts"

// A machine that keeps starting and exiting would post an alert per event.
// Once STORM_EVENTS of its start/exit events fall within STORM_WINDOW, it is
// in a storm: one alert, its events folded into the storm instead of posted,
// an update at most every STORM_UPDATE_EVERY, and a note when it calms down.
// The state lives in the `storms` table, so a restart repeats nothing.

/** A whole number of at least `min`, or `off` (none). */
export const countOrOff = (name: string, fallback: number, min: number) =>
  Config.string(name).pipe(
    Config.mapOrFail((text) => {
      const trimmed = text.trim()
      if (/^(off|never|none)$/i.test(trimmed))
        return Either.right(Option.none<number>())
      return /^\d+$/.test(trimmed) && Number(trimmed) >= min
        ? Either.right(Option.some(Number(trimmed)))
        : Either.left(
            ConfigError.InvalidData(
              [],
              `expected a whole number of at least ${min}, or "off", got "${text}"`,
            ),
          )
    }),
    Config.withDefault(Option.some(fallback)),
  )

// Lazy: Settings.ts lists this in CoreSettings and this file reads
// Settings.ts, so neither may use the other while it is being loaded.
export const StormSettings = Config.suspend(() =>
  Config.all({
    events: countOrOff("STORM_EVENTS", 6, 2),
    window: durationVar("STORM_WINDOW", "10 minutes", { atLeast: "1 minute" }),
    updateEvery: durationVar("STORM_UPDATE_EVERY", "30 minutes", {
      allowOff: true,
    }),
  }),
)
export type StormSettings = Config.Config.Success<typeof StormSettings>

/**
 * Where a burst starts: for the earliest event at or after `from` with at
 * least `threshold` events (itself included) less than `windowMs` before
 * it, the first of those; undefined if there is none. `times` ascending.
 */
export const burstStart = (
  times: ReadonlyArray<number>,
  threshold: number,
  windowMs: number,
  from: number,
): number | undefined => {
  let first = 0
  for (let last = 0; last < times.length; last++) {
    while (times[last]! - times[first]! >= windowMs) first++
    if (times[last]! >= from && last - first + 1 >= threshold)
      return times[first]
  }
  return undefined
}

/**
 * Where a storm stands: its latest event, each following the one before by
 * less than `windowMs`, and whether it is over (a gap that long, or that
 * long since its latest event). `newer` ascending, all after `tip`.
 */
export const stormTip = (
  tip: number,
  newer: ReadonlyArray<number>,
  windowMs: number,
  now: number,
): { readonly tip: number; readonly over: boolean } => {
  let latest = tip
  for (const at of newer) {
    if (at - latest >= windowMs) return { tip: latest, over: true }
    latest = at
  }
  return { tip: latest, over: now - latest >= windowMs }
}

/**
 * Folds storm events, and queues the first alert, the updates and the calm
 * note of each open storm; then opens a storm for every machine whose
 * undelivered events make one, and does the same for it. Each notice key is
 * deterministic, so two passes at once queue it once.
 */
export const triageStorms = Effect.gen(function* () {
  const settings = yield* StormSettings
  if (Option.isNone(settings.events)) return
  const threshold = settings.events.value
  const table = yield* stormTable
  const store = yield* EventStore
  const { prices } = yield* CostSettings
  const { eventsRetention } = yield* RetentionSettings
  const now = yield* Clock.currentTimeMillis
  const windowMs = Duration.toMillis(settings.window)
  const updateMs = Duration.toMillis(settings.updateEvery)
  let machines: ReadonlyMap<string, MachineRecord> | undefined

  const advance = (storm: StormRow) =>
    Effect.gen(function* () {
      machines ??= yield* store.machines()
      const machine = machines.get(storm.machine_id)
      const { tip, over } = stormTip(
        storm.last_event_at,
        yield* table.timesAfter(storm.machine_id, storm.last_event_at),
        windowMs,
        now,
      )
      if (tip > storm.last_event_at) yield* table.extended(storm.key, tip)
      // What comes after a gap that ends the storm is not the storm's.
      const folded = yield* store.fold(
        yield* table.waiting(storm.machine_id, over ? tip : undefined),
        storm.key,
        now,
      )
      const notice = (key: string, embed: Embed) =>
        store.addNotice({
          key,
          kind: "storm",
          createdAt: now,
          silent: false,
          embed,
          app: storm.app,
          org: storm.org ?? undefined,
        })
      // Counting reads the whole storm: only when a notice may be due.
      const due =
        storm.announced === 0 ||
        over ||
        now - (storm.last_notice_at ?? storm.detected_at) >= updateMs
      if (!due) return
      const stats = yield* table.stats(storm, tip)
      const about = { storm, machine, stats }
      let reported = storm.reported
      if (storm.announced === 0) {
        const price =
          machine === undefined
            ? undefined
            : estimate(prices, machine.guest, machine.region, machine.size)
        const hourly =
          price === undefined
            ? undefined
            : `≈ ${usd(price.hourly)}/h while started` +
              (price.caveat === undefined
                ? ""
                : ` (${escapeMarkdown(price.caveat)})`)
        yield* notice(
          storm.key,
          stormEmbed({ ...about, hourly, windowMs, updateMs }),
        )
        yield* table.announced(storm.key, stats.events, now)
        reported = stats.events
        yield* Effect.logWarning("restart storm").pipe(
          Effect.annotateLogs({
            app: storm.app,
            machine: storm.machine_id,
            events: stats.events,
            folded: folded.length,
          }),
        )
      } else if (!over && stats.events > storm.reported) {
        const key = `${storm.key}:update:${storm.updates + 1}`
        yield* notice(key, stormUpdateEmbed({ ...about, key, now }))
        yield* table.updated(storm, stats.events, now)
        reported = stats.events
      }
      if (!over) return
      const key = `${storm.key}:calm`
      yield* notice(
        key,
        calmEmbed({ ...about, storm: { ...storm, reported }, key, windowMs }),
      )
      yield* table.ended(storm.key, now)
      yield* table.removeEndedBefore(now - Duration.toMillis(eventsRetention))
      yield* Effect.log("restart storm over").pipe(
        Effect.annotateLogs({
          app: storm.app,
          machine: storm.machine_id,
          events: stats.events,
          lasted_ms: stats.last - storm.started_at,
        }),
      )
    })

  const before = yield* table.open
  for (const storm of before) yield* advance(storm)

  // A new storm needs an undelivered event: one found late (the monitor
  // or Discord was away) is still one storm, even if it is over by now.
  const stormy = new Set((yield* table.open).map((storm) => storm.machine_id))
  let opened = false
  for (const waiting of yield* table.waitingMachines) {
    if (stormy.has(waiting.machine_id)) continue
    const first = burstStart(
      yield* table.timesAfter(waiting.machine_id, waiting.first - windowMs),
      threshold,
      windowMs,
      waiting.first,
    )
    if (first === undefined) continue
    yield* table.insert({
      key: `storm:${waiting.machine_id}:${first}`,
      machineId: waiting.machine_id,
      app: waiting.app,
      org: waiting.org,
      startedAt: first,
      now,
    })
    opened = true
  }
  if (!opened) return
  // As inserted, or as a pass running at the same time inserted it.
  for (const storm of yield* table.open)
    if (!before.some((old) => old.key === storm.key)) yield* advance(storm)
}).pipe(Effect.withSpan("Storms.triage"))
