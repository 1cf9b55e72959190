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
import { EventStore } from "./EventStore.ts"
import { estimate, usd } from "./Pricing.ts"
import { CostSettings, durationVar, RetentionSettings } from "./Settings.ts"
import { calmEmbed, stormEmbed, stormUpdateEmbed } from "./StormNotices.ts"
import { stormTable } from "./StormTable.ts"

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
    window: durationVar("STORM_WINDOW", "10 minutes"),
    updateEvery: durationVar("STORM_UPDATE_EVERY", "30 minutes", {
      allowOff: true,
    }),
  }),
)
export type StormSettings = Config.Config.Success<typeof StormSettings>

/**
 * Opens a storm for every machine newly past STORM_EVENTS, folds storm
 * events, and queues the first alert, the updates and the calm note. Each
 * notice key is deterministic, so two passes at once queue it once.
 */
export const triageStorms = Effect.gen(function* () {
  const settings = yield* StormSettings
  if (Option.isNone(settings.events)) return
  const table = yield* stormTable
  const store = yield* EventStore
  const now = yield* Clock.currentTimeMillis
  const windowMs = Duration.toMillis(settings.window)
  const updateMs = Duration.toMillis(settings.updateEvery)

  const stormy = new Set((yield* table.open).map((storm) => storm.machine_id))
  for (const burst of yield* table.bursts(
    now - windowMs,
    settings.events.value,
  ))
    if (!stormy.has(burst.machine_id))
      yield* table.insert({
        key: `storm:${burst.machine_id}:${burst.first}`,
        machineId: burst.machine_id,
        app: burst.app,
        org: burst.org,
        startedAt: burst.first,
        now,
      })
  const storms = yield* table.open
  if (storms.length === 0) return

  const { prices } = yield* CostSettings
  const machines = yield* store.machines()
  for (const storm of storms) {
    const machine = machines.get(storm.machine_id)
    const stats = yield* table.stats(storm)
    const about = { storm, machine, stats }
    // Over once STORM_WINDOW passed without a start or exit: what came
    // until then is still the storm's.
    const calm = now - stats.last >= windowMs
    const folded = yield* store.fold(
      yield* table.waiting(storm.machine_id, calm ? stats.last : undefined),
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
    } else if (
      !calm &&
      stats.events > storm.reported &&
      now - (storm.last_notice_at ?? storm.detected_at) >= updateMs
    ) {
      const key = `${storm.key}:update:${storm.updates + 1}`
      yield* notice(key, stormUpdateEmbed({ ...about, key, now }))
      yield* table.updated(storm, stats.events, now)
      reported = stats.events
    }
    if (!calm) continue
    const key = `${storm.key}:calm`
    yield* notice(
      key,
      calmEmbed({ ...about, storm: { ...storm, reported }, key, windowMs }),
    )
    yield* table.ended(storm.key, stats.last, now)
    yield* Effect.log("restart storm over").pipe(
      Effect.annotateLogs({
        app: storm.app,
        machine: storm.machine_id,
        events: stats.events,
        lasted_ms: stats.last - storm.started_at,
      }),
    )
    const { eventsRetention } = yield* RetentionSettings
    yield* table.removeEndedBefore(now - Duration.toMillis(eventsRetention))
  }
}).pipe(Effect.withSpan("Storms.triage"))
