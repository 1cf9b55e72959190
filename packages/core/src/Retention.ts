import { Clock, Duration, Effect } from "effect"
import { EventStore } from "./EventStore.ts"
import { RetentionSettings } from "./Settings.ts"

const DAY = 24 * 3_600_000
const META_CLEANUP = "cleanup_at"

/** Events older than this are history: never announced, and deleted. */
export const retentionCutoff = Effect.gen(function* () {
  const { eventsRetention } = yield* RetentionSettings
  return (yield* Clock.currentTimeMillis) - Duration.toMillis(eventsRetention)
})

/**
 * Once a day, deletes what the monitor no longer needs (see
 * EventStore.cleanup) and logs what it removed. The store stays bounded by
 * the retention and MAX_EVENTS however long it runs.
 */
export const dailyCleanup = Effect.gen(function* () {
  const store = yield* EventStore
  const settings = yield* RetentionSettings
  const now = yield* Clock.currentTimeMillis
  const last = Number((yield* store.getMeta(META_CLEANUP)) ?? 0)
  if (now - last < DAY) return undefined
  const before = now - Duration.toMillis(settings.eventsRetention)
  const at = new Date(now)
  const previousMonth = Date.UTC(at.getUTCFullYear(), at.getUTCMonth() - 1, 1)
  const removed = yield* store.cleanup({
    before,
    runsBefore: Math.min(before, previousMonth),
    maxEvents: settings.maxEvents,
  })
  yield* store.setMeta(META_CLEANUP, String(now), now)
  yield* Effect.log("cleanup done").pipe(
    Effect.annotateLogs({
      removed_events: removed.events,
      removed_machines: removed.machines,
      removed_runs: removed.runs,
      removed_notices: removed.notices,
    }),
  )
  return removed
})
