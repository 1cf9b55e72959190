import { Duration, Exit, Schedule } from "effect"
import { assert, describe, it } from "vitest"
import { patientRetry } from "../../src/Policy.ts"
import {
  assertNoSecrets,
  discordProxy,
  passCounts,
  quickRetry,
  sleep,
  waitFor,
  WATCHDOG_MS,
  withRig,
  type Rig,
} from "./support.ts"

// Discord faults. Each row: baseline, new billing events, the fault, then
// runs until it has cleared; every event must be announced exactly once,
// and the run that met the fault must say what it was.

/** Baseline run, then three new events on three machines. */
const prepare = async (rig: Rig) => {
  const ids = rig.seed(2, 2)
  const first = await rig.once()
  assert.strictEqual(first.code, 0, rig.log())
  rig.start(ids[0]!)
  rig.exit(ids[1]!, 2)
  rig.start(ids[2]!)
  return ids
}

const okOnce = async (rig: Rig) => {
  const result = await rig.once()
  assert.strictEqual(result.code, 0, `signal ${result.signal}\n${rig.log()}`)
  return result
}

/** Delivery attempts after the baseline's "Now watching" message. */
const alertAttempts = (rig: Rig) => rig.discord.requests.slice(1)

describe.concurrent("Discord faults, Bun runner --once", () => {
  it("429 with retry_after 0.3 s: waits, sends once", () =>
    withRig(async (rig) => {
      await prepare(rig)
      rig.discord.respondNext({
        status: 429,
        body: {
          message: "You are being rate limited.",
          retry_after: 0.3,
          global: false,
        },
        // Discord rounds the header up to whole seconds.
        headers: { "Retry-After": "1", "X-RateLimit-Reset-After": "0.300" },
      })
      const result = await okOnce(rig)
      const [limited, sent] = alertAttempts(rig)
      assert.deepStrictEqual([limited!.status, sent!.status], [429, 200])
      assert.isAtLeast(sent!.at - limited!.at, 300)
      assert.match(
        result.stdout,
        /Discord send will be retried: Discord RateLimited \(HTTP 429\): You are being rate limited\.; retry after 1s/,
      )
      rig.assertExactlyOnce()
      console.log(`429 retry_after 0.3 s: waited ${sent!.at - limited!.at} ms`)
    }))

  it("429 with retry_after 45 s: the patient runner waits it out", () =>
    withRig(async (rig) => {
      await prepare(rig)
      rig.discord.respondNext({
        status: 429,
        body: { message: "You are being rate limited.", retry_after: 45 },
        headers: { "Retry-After": "45" },
      })
      const result = await okOnce(rig)
      const [limited, sent] = alertAttempts(rig)
      assert.isAtLeast(sent!.at - limited!.at, 45_000)
      assert.match(result.stdout, /retry after 45s/)
      assert.strictEqual(alertAttempts(rig).length, 2)
      rig.assertExactlyOnce()
    }))

  it("502 twice: retried with backoff, sent once", () =>
    withRig(async (rig) => {
      await prepare(rig)
      rig.discord.respondNext({ status: 502, body: "bad gateway", times: 2 })
      const result = await okOnce(rig)
      assert.strictEqual(
        result.stdout.match(
          /Discord send will be retried: Discord ServerError \(HTTP 502\)/g,
        )?.length,
        2,
      )
      rig.assertExactlyOnce()
    }))

  it("404: stops at once, exits 1, keeps every alert", () =>
    withRig(async (rig) => {
      await prepare(rig)
      rig.discord.respondNext({
        status: 404,
        body: { message: "Unknown Webhook", code: 10015 },
      })
      const failed = await rig.once()
      assert.strictEqual(failed.code, 1)
      assert.match(
        failed.stdout,
        /Discord refused the webhook: no more alerts will be sent until DISCORD_WEBHOOK_URL is fixed; alerts are kept.*Discord WebhookGone \(HTTP 404\): Unknown Webhook \(code 10015\)/,
      )
      assert.strictEqual(alertAttempts(rig).length, 1)
      await okOnce(rig)
      rig.assertExactlyOnce()
    }))

  it("404 in the loop: no further request, later alerts kept", () =>
    withRig(async (rig) => {
      const ids = await prepare(rig)
      rig.discord.respondNext({
        status: 404,
        body: { message: "Unknown Webhook", code: 10015 },
      })
      const run = rig.loop("150ms")
      const passes = () =>
        run.output().match(/message="pass failed/g)?.length ?? 0
      assert.isTrue(await waitFor(() => passes() >= 2, WATCHDOG_MS), rig.log())
      rig.exit(ids[3]!, 9)
      const seen = passes()
      assert.isTrue(
        await waitFor(() => passes() >= seen + 3, WATCHDOG_MS),
        run.output(),
      )
      run.child.kill("SIGTERM")
      const result = await run.done
      assert.strictEqual(result.code, 0)
      assert.strictEqual(alertAttempts(rig).length, 1)
      assert.match(
        result.stdout,
        /sending stopped after an earlier answer: Unknown Webhook/,
      )
      await okOnce(rig)
      rig.assertExactlyOnce()
    }))

  it("connection reset before Discord answers: retried, sent once", () =>
    withRig(async (rig) => {
      await prepare(rig)
      rig.discord.respondNext({ status: 500, resetAfterSend: true })
      const result = await okOnce(rig)
      assert.match(
        result.stdout,
        /Discord send will be retried: Discord Transport: network error/,
      )
      assert.deepStrictEqual(
        alertAttempts(rig).map((r) => r.status),
        [0, 200],
      )
      rig.assertExactlyOnce()
    }))

  /**
   * The fake's reset drops the message. Here Discord posts it and only the
   * answer is lost, which no client can tell from the reset above, so the
   * retry posts it again. A known gap (delivery is at-least-once; Discord
   * webhooks take no idempotency key), asserted exactly: each alert twice,
   * none lost. Fixing the gap turns this row red; it should then assert
   * `assertExactlyOnce`.
   */
  it("answer lost after Discord posted: each alert posted twice (known gap)", () =>
    withRig(async (rig) => {
      await prepare(rig)
      const proxy = await discordProxy(rig.discord.url, { drops: 1 })
      try {
        const result = await rig.once({
          DISCORD_WEBHOOK_URL: rig.webhookUrl.replace(
            rig.discord.url,
            proxy.url,
          ),
        })
        assert.strictEqual(result.code, 0, rig.log())
        assert.match(
          result.stdout,
          /Discord send will be retried: Discord Transport/,
        )
        console.log(
          `answer lost once: ${rig.posted().length} posts for ${rig.expected.length} events, duplicates ${JSON.stringify([...rig.duplicates()])}`,
        )
        assert.strictEqual(rig.posted().length, 2 * rig.expected.length)
        assert.deepStrictEqual(
          new Map([...rig.duplicates()].sort()),
          new Map(rig.expected.map((key) => [key, 2] as const).sort()),
          rig.log(),
        )
      } finally {
        await proxy.close()
      }
    }))
  /**
   * A Fly string that is only whitespace would make a blank embed field,
   * which Discord refuses (400) and which would block the oldest batch.
   */
  it("a blank source from Fly: every alert still delivered", () =>
    withRig(async (rig) => {
      const ids = rig.seed(1, 2)
      assert.strictEqual((await rig.once()).code, 0, rig.log())
      rig.track(
        ids[0]!,
        rig.fly.emit(ids[0]!, {
          type: "start",
          status: "started",
          source: " ",
          request: {},
        }),
      )
      rig.exit(ids[1]!, 5)
      const runs = []
      for (let run = 0; run < 3; run++) runs.push((await rig.once()).code)
      console.log(
        `blank source: exit codes ${runs.join(",")}, ${rig.posted().length} of ${rig.expected.length} alerts sent, ` +
          `${alertAttempts(rig).length} Discord requests`,
      )
      // A blank string becomes "–" in the embed, so Discord accepts it.
      assert.deepStrictEqual(runs, [0, 0, 0])
      rig.assertExactlyOnce()
    }))
})

describe("Discord faults, core pass in-process", () => {
  it("429 with retry_after 45 s under a brief policy: kept for the next pass", () =>
    withRig(async (rig) => {
      await prepare(rig)
      rig.discord.respondNext({
        status: 429,
        body: { message: "You are being rate limited.", retry_after: 45 },
      })
      const brief = { ...quickRetry, longestRateLimitWait: Duration.seconds(5) }
      const failed = await rig.inProcess({ policy: brief })
      assert.isTrue(Exit.isFailure(failed))
      assert.match(rig.log(), /pass done, delivery failed/)
      assert.match(
        rig.log(),
        /Discord RateLimited \(HTTP 429\).*retry after 45s/,
      )
      assert.strictEqual(alertAttempts(rig).length, 1)
      assert.isTrue(Exit.isSuccess(await rig.inProcess({ policy: brief })))
      rig.assertExactlyOnce()
    }))

  it("5xx for 12 attempts (4 passes), then recovery: each alert once", () =>
    withRig(async (rig) => {
      const ids = await prepare(rig)
      rig.discord.respondNext({
        status: 503,
        body: "upstream connect error",
        times: 12,
      })
      for (let pass = 0; pass < 4; pass++) {
        const exit = await rig.inProcess()
        assert.isTrue(Exit.isFailure(exit), `pass ${pass}`)
        rig.exit(ids[pass % ids.length]!, 10 + pass)
      }
      assert.strictEqual(
        rig.log().match(/pass done, delivery failed/g)?.length,
        4,
      )
      assert.match(
        rig.log(),
        /Discord ServerError \(HTTP 503\): upstream connect error/,
      )
      assert.deepStrictEqual(rig.posted(), [])
      const recovered = await rig.inProcess()
      assert.isTrue(Exit.isSuccess(recovered), rig.log())
      assert.deepStrictEqual(passCounts(rig.log(), ["alerts_sent"]), [
        rig.expected.length,
      ])
      rig.assertExactlyOnce()
    }))

  it("global 429: no send before the wait, then each alert once", () =>
    withRig(async (rig) => {
      await prepare(rig)
      rig.discord.respondNext({
        status: 429,
        body: {
          message: "You are being rate limited.",
          retry_after: 0.2,
          global: true,
        },
        headers: { "X-RateLimit-Global": "true", "Retry-After": "1" },
      })
      // Waited inside the pass, or the pass ends and a later one sends.
      for (let pass = 0; pass < 3 && rig.posted().length === 0; pass++) {
        await rig.inProcess()
        if (rig.posted().length === 0) await sleep(1200)
      }
      const [limited, sent] = alertAttempts(rig)
      assert.strictEqual(limited!.status, 429)
      assert.isAtLeast(sent!.at - limited!.at, 1000)
      assert.match(rig.log(), /global/)
      rig.assertExactlyOnce()
    }))

  /**
   * Discord: a 429 without rate-limit headers comes from Cloudflare and
   * means the IP is banned for a while; retrying at once makes it worse.
   */
  it("header-less 429 (IP ban): backs off ≥ 1 s", () =>
    withRig(async (rig) => {
      await prepare(rig)
      rig.discord.respondNext({
        status: 429,
        body: "<html><body>error code: 1015</body></html>",
        times: 7,
      })
      await rig.inProcess({ policy: patientRetry })
      const attempts = alertAttempts(rig)
      assert.isAtLeast(attempts.length, 1)
      console.log(
        `header-less 429: ${attempts.length} attempts in ${attempts.at(-1)!.at - attempts[0]!.at} ms`,
      )
      // No second attempt within the pass is backing off too.
      const gap =
        attempts.length < 2
          ? Number.POSITIVE_INFINITY
          : attempts[1]!.at - attempts[0]!.at
      assert.isAtLeast(gap, 1000)
    }))

  it("no circuit breaker: each pass of an outage spends every retry", () =>
    withRig(async (rig) => {
      await prepare(rig)
      rig.discord.respondNext({ status: 503, body: "down", times: 9 })
      const noDelay = {
        ...quickRetry,
        discord: Schedule.recurs(2),
      }
      for (let pass = 0; pass < 3; pass++)
        assert.isTrue(Exit.isFailure(await rig.inProcess({ policy: noDelay })))
      // 3 attempts a pass, the policy's whole budget, every pass.
      assert.strictEqual(alertAttempts(rig).length, 9)
      assert.isTrue(Exit.isSuccess(await rig.inProcess({ policy: noDelay })))
      rig.assertExactlyOnce()
    }))
})

describe("secrets", () => {
  it("no token or webhook URL in any log line or Discord message", () => {
    assertNoSecrets()
  })
})
