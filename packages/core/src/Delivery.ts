import { Clock, Effect, Either, Metric } from "effect"
import {
  type Embed,
  eventEmbed,
  pack,
  payload,
  SUPPRESS_NOTIFICATIONS,
} from "./DiscordMessage.ts"
import { EventStore } from "./EventStore.ts"
import * as Metrics from "./Metrics.ts"
import { type DiscordError, Notifier } from "./Notifier.ts"
import { CostSettings } from "./Settings.ts"

/** How long a pass owns the alerts it is delivering. */
export const CLAIM_MS = 15 * 60 * 1000
const CLAIM_BATCH = 100
const MAX_BATCHES_PER_PASS = 50

const countFailed = (error: DiscordError, alerts: number) =>
  Metric.incrementBy(
    Metric.tagged(Metrics.alertsFailed, "reason", error.reason),
    alerts,
  )

/** Sends every undelivered alert, oldest first, marking each on success. */
export const deliverPending = Effect.gen(function* () {
  const store = yield* EventStore
  const notifier = yield* Notifier
  const { prices } = yield* CostSettings
  let sent = 0
  for (let batch = 0; batch < MAX_BATCHES_PER_PASS; batch++) {
    const claimed = yield* store.claimUndelivered({
      now: yield* Clock.currentTimeMillis,
      claimMs: CLAIM_MS,
      limit: CLAIM_BATCH,
    })
    if (claimed.length === 0) break
    const embeds = claimed.map((event) => eventEmbed(event, prices))
    const messages = pack(embeds)
    for (const [index, message] of messages.entries()) {
      const keys = message.map((i) => claimed[i]!.key)
      const result = yield* Effect.either(
        notifier.send(payload({ embeds: message.map((i) => embeds[i]!) })),
      )
      if (Either.isLeft(result)) {
        const unsent = messages
          .slice(index)
          .flatMap((rest) => rest.map((i) => claimed[i]!.key))
        yield* store.release(unsent)
        yield* countFailed(result.left, keys.length)
        return yield* Effect.fail(result.left)
      }
      yield* store.markNotified(keys, yield* Clock.currentTimeMillis)
      yield* Metric.incrementBy(Metrics.alertsSent, keys.length)
      sent += keys.length
    }
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
    const messages = groups.flatMap((group) =>
      pack(group.map((notice) => notice.embed as Embed)).map((indexes) => ({
        notices: indexes.map((i) => group[i]!),
        silent: group[0]!.silent,
      })),
    )
    for (const [index, message] of messages.entries()) {
      const keys = message.notices.map((notice) => notice.key)
      const result = yield* Effect.either(
        notifier.send(
          payload({
            embeds: message.notices.map((notice) => notice.embed as Embed),
            ...(message.silent ? { flags: SUPPRESS_NOTIFICATIONS } : {}),
          }),
        ),
      )
      if (Either.isLeft(result)) {
        yield* store.releaseNotices(
          messages.slice(index).flatMap((m) => m.notices.map((n) => n.key)),
        )
        yield* countFailed(result.left, keys.length)
        return yield* Effect.fail(result.left)
      }
      yield* store.markNoticesNotified(keys, yield* Clock.currentTimeMillis)
      yield* Metric.incrementBy(Metrics.alertsSent, keys.length)
      sent += keys.length
    }
    if (claimed.length < CLAIM_BATCH) break
  }
  return sent
})
