import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, TestClock } from "effect"
import { footerKeys } from "../src/DiscordMessage.ts"
import { runPass } from "../src/Monitor.ts"
import { envFor, fakesAt, layerMonitor } from "./support.ts"

const HOUR = 3_600_000
let now = 0

describe("retention", () => {
  it.scoped(
    "a month of a busy org: bounded rows, nothing undelivered lost, nothing repeated",
    () =>
      Effect.gen(function* () {
        const t0 = Date.UTC(2026, 10, 1)
        now = t0
        yield* TestClock.setTime(t0)
        const { fly, discord } = yield* fakesAt(() => now)
        const machines: Array<string> = []
        for (let a = 0; a < 5; a++) {
          fly.addApp(`app-${a}`)
          for (let m = 0; m < 4; m++) {
            const id = `m${a}${m}`
            fly.addMachine(`app-${a}`, { id, name: id, region: "iad" })
            machines.push(id)
          }
        }
        const layer = layerMonitor({
          ...envFor(fly, discord),
          EVENTS_RETENTION: "7d",
          MAX_EVENTS: "1000",
          MAX_RUNTIME: "90d",
          DIGEST_HOUR: "off",
          // Every alert of the 2-day outage is posted as itself, not summed up.
          MAX_ALERT_AGE: "30d",
        })
        const announced: Array<string> = []
        let maxRows = 0
        let undeliveredMax = 0
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const count = (where: string) =>
            sql<{
              n: number
            }>`SELECT COUNT(*) AS n FROM events WHERE ${sql.literal(where)}`.pipe(
              Effect.map((rows) => Number(rows[0]!.n)),
            )
          yield* runPass
          // 40 days, a pass every 6 hours; every machine starts and exits in
          // each period. Discord is down for days 20 to 22.
          for (let step = 1; step <= 160; step++) {
            now = t0 + step * 6 * HOUR
            yield* TestClock.setTime(now)
            for (const id of machines) {
              announced.push(fly.start(id).id!)
              announced.push(fly.exit(id, { exitCode: step % 3 }).id!)
            }
            const down = step >= 80 && step < 88
            if (down) discord.respondNext({ status: 503, times: 3 })
            const pass = yield* Effect.either(runPass)
            assert.strictEqual(
              pass._tag,
              down ? "Left" : "Right",
              `step ${step}`,
            )
            maxRows = Math.max(maxRows, yield* count("1 = 1"))
            undeliveredMax = Math.max(
              undeliveredMax,
              yield* count("notified_at IS NULL"),
            )
          }
          assert.strictEqual(yield* count("notified_at IS NULL"), 0)
        }).pipe(Effect.provide(layer))

        const posted = discord.messages.flatMap((m) =>
          (m.embeds ?? []).flatMap((e: { footer: { text: string } }) =>
            footerKeys(e.footer.text),
          ),
        )
        // Every event once: none lost while Discord was down, none repeated
        // after its row was deleted.
        assert.strictEqual(posted.length, announced.length)
        assert.sameMembers(posted, announced)
        // 8 failed passes × 40 events waited in the store, untouched.
        assert.strictEqual(undeliveredMax, 8 * 40)
        // The cap (1000) plus at most a day of events between cleanups.
        assert.isAtMost(maxRows, 1000 + 4 * 40 + 8 * 40)
      }),
    60_000,
  )
})
