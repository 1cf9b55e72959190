import {
  FakeDiscord,
  type FakeDiscordOptions,
} from "@flymon/testkit/FakeDiscord"
import { Chunk, Clock, Effect, Fiber, Option, TestClock } from "effect"

const MINUTE = 60_000

/** Sleeps further out than this are request timeouts, never waited for. */
export const HORIZON = 12 * 60 * MINUTE

/**
 * Runs `effect` on the TestClock: whenever it waits on the clock alone, the
 * clock jumps to the next wake-up. HTTP to the fakes runs in real time.
 */
export const simulate = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const fiber = yield* Effect.fork(effect)
    while (true) {
      yield* Effect.promise(() => new Promise((r) => setTimeout(r, 1)))
      const exit = yield* Fiber.poll(fiber)
      if (Option.isSome(exit)) return yield* exit.value
      const now = yield* Clock.currentTimeMillis
      const next = Chunk.toReadonlyArray(yield* TestClock.sleeps()).filter(
        (at) => at > now && at - now < HORIZON,
      )
      if (next.length > 0) yield* TestClock.setTime(Math.min(...next))
    }
  })

/** Waits (in real time) until some fiber sleeps on the TestClock. */
export const untilWaiting = Effect.gen(function* () {
  while (true) {
    yield* Effect.promise(() => new Promise((r) => setTimeout(r, 1)))
    const now = yield* Clock.currentTimeMillis
    const sleeps = Chunk.toReadonlyArray(yield* TestClock.sleeps())
    if (sleeps.some((at) => at > now && at - now < HORIZON)) return
  }
})

export const startDiscord = (options: Omit<FakeDiscordOptions, "now"> = {}) =>
  Effect.gen(function* () {
    const clock = yield* Effect.clock
    return yield* Effect.acquireRelease(
      Effect.promise(() =>
        FakeDiscord.start({
          ...options,
          now: () => clock.unsafeCurrentTimeMillis(),
        }),
      ),
      (discord) => Effect.promise(() => discord.stop()),
    )
  })
