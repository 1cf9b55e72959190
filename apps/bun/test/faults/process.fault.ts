import { footerKeys } from "@flymon/core/DiscordMessage"
import { CLAIM_MS } from "@flymon/core/Monitor"
import { Database } from "bun:sqlite"
import { Exit } from "effect"
import { assert, describe, it } from "vitest"
import { startCli } from "../cli.ts"
import {
  assertNoSecrets,
  discordProxy,
  sleep,
  waitFor,
  WATCHDOG_MS,
  withRig,
  type Rig,
} from "./support.ts"

// The process dies or has company: SIGKILL at random points of a pass,
// SIGTERM while Discord is answering, two runners on one SQLite file.

/** Deterministic, so every run kills at the same offsets. */
const mulberry32 = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

const KILLS = 50
const SEED = 20261203
/** Fake Fly latency, so a pass lasts long enough to be killed inside. */
const FLY_LATENCY_MS = 100
/** Fake Discord answers this long after it accepted a message. */
const DISCORD_LATENCY_MS = 150
/** Where kills are aimed; each lands at a random point inside its phase. */
const PHASES = ["listing", "storing", "sending"] as const
const APPS = 5

/** Each machine's next event: start when stopped, else a crash. */
const nextEvent = (rig: Rig, id: string) =>
  rig.fly.stateOf(id) === "started" ? rig.exit(id, 1) : rig.start(id)

const countOf = (rig: Rig, key: string) =>
  rig.posted().filter((posted) => posted === key).length

describe("process faults", () => {
  it(`SIGKILL at ${KILLS} random points, then run to completion`, async () =>
    withRig(async (rig) => {
      const random = mulberry32(SEED)
      const ids = rig.seed(APPS, 4)
      assert.strictEqual((await rig.once()).code, 0, rig.log())
      rig.fly.latencyMs = FLY_LATENCY_MS
      const proxy = await discordProxy(rig.discord.url, {
        delayMs: DISCORD_LATENCY_MS,
      })
      const env = rig.env({
        LOG_LEVEL: "Info",
        DISCORD_WEBHOOK_URL: rig.webhookUrl.replace(rig.discord.url, proxy.url),
      })
      const outcomes = { flyPending: 0, storing: 0, sending: 0, finished: 0 }
      // Keys of the last message each killed run got accepted: the only
      // alerts a kill can repeat (answered, not yet marked delivered).
      const atRisk = new Set<string>()
      for (let kill = 0; kill < KILLS; kill++) {
        const machines = 1 + Math.floor(random() * 4)
        for (let m = 0; m < machines; m++) {
          const id = ids[Math.floor(random() * ids.length)]!
          // Now and then a crash loop longer than Fly's embedded tail.
          const burst = random() < 0.15 ? 6 : 1
          for (let e = 0; e < burst; e++) nextEvent(rig, id)
        }
        const flyBefore = rig.fly.requests.length
        const discordBefore = rig.discord.requests.length
        const messagesBefore = rig.discord.messages.length
        const run = startCli(["--once"], env, { cwd: rig.dir })
        let ended = false
        const end = () => (ended = true)
        run.done.then(end, end)
        // Aim each kill at a phase of the pass, then land at random in it.
        // These waits only aim: a run that ends first, or a phase that
        // takes longer, moves the kill, and the assertions hold wherever
        // it lands.
        const phase = PHASES[Math.floor(random() * PHASES.length)]!
        const jitter = random()
        const reached = (check: () => boolean) =>
          waitFor(() => ended || check(), 15_000)
        await reached(() => rig.fly.requests.length > flyBefore)
        if (phase === "listing") await sleep(jitter * 2 * FLY_LATENCY_MS)
        if (phase === "storing") {
          await reached(() => {
            const sent = rig.fly.requests.slice(flyBefore)
            return sent.length > APPS && sent.every((r) => r.status > 0)
          })
          await sleep(jitter * 30)
        }
        if (phase === "sending") {
          await reached(() => rig.discord.requests.length > discordBefore)
          await sleep(jitter * (DISCORD_LATENCY_MS + 50))
        }
        const flyPending = rig.fly.requests
          .slice(flyBefore)
          .some((r) => r.status === 0)
        const sending = rig.discord.requests.length > discordBefore
        run.child.kill("SIGKILL")
        const result = await run.done
        // The run's last request may still be on its way to Discord.
        await proxy.quiet()
        rig.output.push(result.stdout, result.stderr)
        if (result.signal !== "SIGKILL") {
          outcomes.finished++
          continue
        }
        if (sending) outcomes.sending++
        else if (flyPending) outcomes.flyPending++
        else outcomes.storing++
        const last = rig.discord.messages.slice(messagesBefore).at(-1)
        for (const embed of last?.embeds ?? [])
          for (const key of footerKeys(embed.footer?.text ?? ""))
            atRisk.add(key)
      }
      rig.fly.latencyMs = 0
      await proxy.close()

      // A restart right away, on the real clock, until it has nothing left
      // to send that it may send.
      assert.strictEqual((await rig.once()).code, 0, rig.log())
      const afterRestart = rig.undelivered(Date.now())
      const heldByClaims = afterRestart.claimed
      const postedAfterRestart = new Set(rig.posted())
      const notPosted = rig.expected.filter(
        (key) => !postedAfterRestart.has(key),
      ).length

      // Once the dead passes' claims (CLAIM_MS) have run out: passes until
      // nothing is left. Pacing can end a pass early, never before its
      // first message, so each pass must leave fewer alerts than the last.
      const offset = CLAIM_MS + 60_000
      const leftLate = () => {
        const left = rig.undelivered(Date.now() + offset)
        return left.claimed + left.unclaimed
      }
      let latePasses = 0
      for (let left = leftLate(); left > 0;) {
        const late = await rig.inProcess({ clockOffsetMs: offset })
        latePasses++
        assert.isTrue(Exit.isSuccess(late), rig.log())
        const before = left
        left = leftLate()
        assert.isBelow(
          left,
          before,
          `late pass ${latePasses} delivered nothing\n${rig.log()}`,
        )
      }
      const missing = rig.expected.filter((key) => countOf(rig, key) === 0)
      const duplicates = [...rig.duplicates().values()].reduce(
        (sum, n) => sum + n - 1,
        0,
      )
      console.log(
        `FIGURES sigkill: kills=${KILLS} seed=${SEED} ` +
          `events=${rig.expected.length} posts=${rig.posted().length} ` +
          `duplicates=${duplicates} missing=${missing.length} ` +
          `not_posted_after_restart=${notPosted} ` +
          `claimed_after_restart=${heldByClaims} ` +
          `at_risk=${atRisk.size} late_passes=${latePasses} ` +
          `outcomes=${JSON.stringify(outcomes)}`,
      )
      assert.deepStrictEqual(missing, [], "every billing event announced")
      // Only a kill between Discord's answer and the store update repeats.
      for (const key of rig.duplicates().keys()) assert.isTrue(atRisk.has(key))
    }))

  it("SIGTERM while Discord answers, restart: alerts go out on the restart", () =>
    withRig(async (rig) => {
      const ids = rig.seed(2, 2)
      assert.strictEqual((await rig.once()).code, 0, rig.log())
      rig.start(ids[0]!)
      rig.exit(ids[1]!, 4)
      rig.discord.respondNext({ status: 503, body: "slow", delayMs: 3000 })
      const run = rig.loop("1s")
      assert.isTrue(
        await waitFor(() => rig.discord.requests.length >= 2, WATCHDOG_MS),
        run.output(),
      )
      run.child.kill("SIGTERM")
      const stopped = await run.done
      assert.strictEqual(stopped.code, 0)
      assert.strictEqual((await rig.once()).code, 0, rig.log())
      console.log(
        `SIGTERM mid-send: ${rig.posted().length} of ${rig.expected.length} alerts sent by the restart`,
      )
      rig.assertExactlyOnce()
    }))

  it("two runners on one SQLite file, looping every 100 ms: no duplicate", () =>
    withRig(async (rig) => {
      const random = mulberry32(SEED + 1)
      const ids = rig.seed(3, 3)
      // An empty file already in WAL mode: both runners migrate and take
      // their baseline at once. A brand-new file is the next row.
      const empty = new Database(rig.databasePath)
      empty.run("PRAGMA journal_mode = WAL")
      empty.close()
      const runs = [rig.loop("100ms"), rig.loop("100ms")]
      const passesOf = (i: number) =>
        runs[i]!.output().match(/message="pass (done|failed)/g)?.length ?? 0
      const anyEnded = () => runs.some((run) => run.child.exitCode !== null)
      const output = () => runs.map((run) => run.output()).join("\n")
      const bothPassed = (at: ReadonlyArray<number>) =>
        passesOf(0) >= at[0]! && passesOf(1) >= at[1]!
      assert.isTrue(
        (await waitFor(() => bothPassed([2, 2]) || anyEnded(), WATCHDOG_MS)) &&
          bothPassed([2, 2]),
        output(),
      )
      for (let round = 0; round < 30; round++) {
        nextEvent(rig, ids[Math.floor(random() * ids.length)]!)
        await sleep(50 + Math.floor(random() * 150))
      }
      const next = [passesOf(0) + 3, passesOf(1) + 3]
      assert.isTrue(
        (await waitFor(() => bothPassed(next) || anyEnded(), WATCHDOG_MS)) &&
          bothPassed(next),
        output(),
      )
      for (const run of runs) run.child.kill("SIGTERM")
      const results = await Promise.all(runs.map((run) => run.done))
      assert.deepStrictEqual(
        results.map((r) => r.code),
        [0, 0],
      )
      const log = rig.log()
      const watching = rig.discord.messages.filter((m) =>
        m.content?.startsWith("Now watching"),
      )
      const failed = log.match(/message="pass failed/g)?.length ?? 0
      const locked = log.match(/database is locked/g)?.length ?? 0
      console.log(
        `FIGURES two-runners: events=${rig.expected.length} posts=${rig.posted().length} ` +
          `passes=${passesOf(0)}+${passesOf(1)} failed_passes=${failed} locked=${locked}`,
      )
      assert.strictEqual(watching.length, 1)
      rig.assertExactlyOnce()
    }))

  /**
   * Two runners started together on a new DATABASE_PATH: the second can
   * find the first creating the file. The runner sets busy_timeout before
   * anything else, switching the file to WAL included, so it waits for the
   * lock instead of failing.
   */
  it("a runner opening a brand-new file another process holds: waits, then starts", () =>
    withRig(async (rig) => {
      const ids = rig.seed(1, 2)
      const holder = new Database(rig.databasePath)
      holder.run("BEGIN EXCLUSIVE")
      holder.run("CREATE TABLE held (x)")
      // Released while the runner waits (its busy_timeout is 5 s).
      const release = new Promise<void>((resolve) =>
        setTimeout(() => {
          holder.run("ROLLBACK")
          holder.close()
          resolve()
        }, 1000),
      )
      const first = await rig.once()
      await release
      assert.strictEqual(first.code, 0, rig.log())
      assert.notMatch(first.stdout + first.stderr, /database is locked/)
      rig.start(ids[0]!)
      rig.exit(ids[1]!, 3)
      assert.strictEqual((await rig.once()).code, 0, rig.log())
      rig.assertExactlyOnce()
    }))
})

describe("secrets", () => {
  it("no token or webhook URL in any log line or Discord message", () => {
    assertNoSecrets()
  })
})
