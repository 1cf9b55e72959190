import { FakeDiscord } from "@flymon/testkit/FakeDiscord"
import { type FakeEvent, FakeFly } from "@flymon/testkit/FakeFly"
import {
  Clock,
  ConfigProvider,
  Duration,
  Effect,
  Exit,
  Layer,
  Schedule,
  Scope,
  TestClock,
} from "effect"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { runPass } from "../src/Monitor.ts"
import type { RetryPolicyShape } from "../src/RetryPolicy.ts"
import {
  envFor,
  FLY_TOKEN,
  layerMonitor,
  layerSqliteAt,
  ORG,
} from "./support.ts"
import { simulate } from "./simulate.ts"

// Whole passes on simulated time, for the storm and app-limit tests: Fly
// events emitted at set instants, passes at set poll times, monitor
// processes built once on a database file. The TestClock drives the
// monitor; the fake Fly dates events and the fake Discord its buckets by it.

export const SECOND = 1000
export const MINUTE = 60_000

/** Patient, without backoff; request timeouts far beyond any test. */
const policy: RetryPolicyShape = {
  fly: Schedule.recurs(2),
  discord: Schedule.recurs(2),
  longestRateLimitWait: Duration.minutes(2),
  requestTimeout: Duration.days(1),
}
/** Moves the TestClock to `ms`; a step back would be a broken test. */
const at = (ms: number) =>
  Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis
    if (ms < now)
      return yield* Effect.dieMessage(
        `the clock is at ${new Date(now).toISOString()}, past ${new Date(ms).toISOString()}`,
      )
    yield* TestClock.setTime(ms)
  })

/** The fakes, on the TestClock. */
export const fakes = Effect.gen(function* () {
  const clock = yield* Effect.clock
  const now = () => clock.unsafeCurrentTimeMillis()
  const fly = yield* Effect.acquireRelease(
    Effect.promise(() => FakeFly.start({ token: FLY_TOKEN, org: ORG, now })),
    (fly) => Effect.promise(() => fly.stop()),
  )
  const discord = yield* Effect.acquireRelease(
    Effect.promise(() => FakeDiscord.start({ now })),
    (discord) => Effect.promise(() => discord.stop()),
  )
  return { fly, discord }
})

export const tempDb = () =>
  join(mkdtempSync(join(tmpdir(), "flymon-timeline-")), "m.db")

/**
 * One monitor process: services built once, on a database file. `pass`
 * fails as the pass does; `stop` ends the process.
 */
export const startProcess = (
  fly: FakeFly,
  discord: FakeDiscord,
  file: string,
  env: Record<string, string>,
) =>
  Effect.gen(function* () {
    const all = { ...envFor(fly, discord), DIGEST_HOUR: "off", ...env }
    const provider = ConfigProvider.fromMap(new Map(Object.entries(all)))
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(
      layerMonitor(all, policy, layerSqliteAt(file)),
      scope,
    )
    return {
      pass: simulate(
        runPass.pipe(
          Effect.provide(context),
          Effect.withConfigProvider(provider),
        ),
      ),
      stop: Scope.close(scope, Exit.void),
    }
  })

export interface Emit {
  readonly at: number
  readonly emit: () => FakeEvent
}

/**
 * Emits each event at its time and runs `pass` at each poll time (events
 * of the poll's own instant first). Returns the events, in emit order.
 */
export const timeline = (
  emits: ReadonlyArray<Emit>,
  polls: ReadonlyArray<number>,
  pass: (at: number) => Effect.Effect<unknown, unknown>,
) =>
  Effect.gen(function* () {
    const queue = [...emits].sort((a, b) => a.at - b.at)
    const emitted: Array<FakeEvent> = []
    for (const poll of polls) {
      while (queue.length > 0 && queue[0]!.at <= poll) {
        const next = queue.shift()!
        yield* at(next.at)
        emitted.push(next.emit())
      }
      yield* at(poll)
      yield* pass(poll)
    }
    return emitted
  })

/** `from`, `from + step`, … up to `to` inclusive. */
export const every = (from: number, to: number, step: number) =>
  Array.from(
    { length: Math.floor((to - from) / step) + 1 },
    (_, i) => from + i * step,
  )

/**
 * A crash loop from `from`: every 15 s an exit (code 1, every tenth one
 * out of memory) 3 s in, and a start 8 s in.
 */
export const crashLoop = (
  fly: FakeFly,
  machine: string,
  from: number,
  cycles: number,
): ReadonlyArray<Emit> =>
  Array.from({ length: cycles }, (_, k): ReadonlyArray<Emit> => [
    {
      at: from + k * 15 * SECOND + 3 * SECOND,
      emit: () =>
        fly.exit(machine, {
          ...(k % 10 === 9 ? { oomKilled: true } : { exitCode: 1 }),
          restarting: true,
        }),
    },
    { at: from + k * 15 * SECOND + 8 * SECOND, emit: () => fly.start(machine) },
  ]).flat()

export interface PostedEmbed {
  readonly title: string
  readonly description?: string
  readonly fields: ReadonlyArray<{ name: string; value: string }>
  readonly footer: { readonly text: string }
}

/** Every embed Discord accepted, in order. */
export const embedsOf = (discord: FakeDiscord): ReadonlyArray<PostedEmbed> =>
  discord.messages.flatMap((m) => (m.embeds ?? []) as Array<PostedEmbed>)

/**
 * Event keys named in footers, once per mention: `event k` alone, or
 * `events k1 k2` when several events of a machine share an embed.
 */
export const announcedKeys = (discord: FakeDiscord) =>
  embedsOf(discord).flatMap((embed) => {
    const match = /^events? (.+)$/.exec(embed.footer.text)
    return match === null ? [] : match[1]!.split(" ")
  })

export const keysOf = (events: ReadonlyArray<FakeEvent>) =>
  events.map((event) => event.id!)
