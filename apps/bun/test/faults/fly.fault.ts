import { Duration, Exit, Schedule } from "effect"
import { assert, describe, it } from "vitest"
import {
  assertNoSecrets,
  passCounts,
  quickRetry,
  SECRETS,
  withRig,
  type Rig,
} from "./support.ts"

// Fly API faults. Each row: baseline, new billing events, the fault, then
// runs until it has cleared; every event must be announced exactly once and
// the run that met the fault must say what it was.

const MACHINES = /^\/v1\/apps\/app-0\/machines$/
const APPS = /^\/v1\/apps$/

/** Baseline run, then one new event on each of two apps. */
const prepare = async (rig: Rig) => {
  const [a, , c] = rig.seed(2, 2)
  const first = await rig.once()
  assert.strictEqual(first.code, 0, rig.log())
  rig.start(a!)
  rig.exit(c!, 3)
}

const okOnce = async (rig: Rig) => {
  const result = await rig.once()
  assert.strictEqual(result.code, 0, `signal ${result.signal}\n${rig.log()}`)
  return result
}

describe.concurrent("Fly faults, Bun runner --once", () => {
  it("401: exits 1 naming the rejected token, nothing lost", () =>
    withRig(async (rig) => {
      await prepare(rig)
      const requestsBefore = rig.fly.requests.length
      const failed = await rig.once({
        FLY_API_TOKEN: `${SECRETS.flyToken}-revoked`,
      })
      assert.strictEqual(failed.code, 1)
      assert.match(failed.stdout, /token rejected \(HTTP 401\)/)
      // A rejected token is not retried.
      assert.strictEqual(rig.fly.requests.length - requestsBefore, 1)
      assert.deepStrictEqual(rig.posted(), [])
      await okOnce(rig)
      rig.assertExactlyOnce()
    }))

  it("403 on one app's machines: exits 1, token rejected", () =>
    withRig(async (rig) => {
      await prepare(rig)
      rig.fly.failNext({ path: MACHINES }, { status: 403 })
      const failed = await rig.once()
      assert.strictEqual(failed.code, 1)
      assert.match(failed.stdout, /token rejected \(HTTP 403\)/)
      assert.deepStrictEqual(rig.posted(), [])
      await okOnce(rig)
      rig.assertExactlyOnce()
    }))

  it("404 org: exits 1 naming the org", () =>
    withRig(async (rig) => {
      await prepare(rig)
      const failed = await rig.once({ FLY_ORG_SLUG: "no-such-org" })
      assert.strictEqual(failed.code, 1)
      assert.match(
        failed.stdout,
        /Fly API NotFound \(HTTP 404\) on GET \/v1\/apps\?org_slug=no-such-org: organization not found/,
      )
      await okOnce(rig)
      rig.assertExactlyOnce()
    }))

  it("429 with Retry-After: waits, retries, exit 0", () =>
    withRig(async (rig) => {
      await prepare(rig)
      rig.fly.failNext(
        { path: MACHINES },
        { status: 429, headers: { "Retry-After": "1" } },
      )
      const started = Date.now()
      const result = await okOnce(rig)
      assert.isAtLeast(Date.now() - started, 1000)
      assert.match(result.stdout, /retrying: Fly API RateLimited \(HTTP 429\)/)
      rig.assertExactlyOnce()
    }))

  it("429 without Retry-After: retried with backoff, exit 0", () =>
    withRig(async (rig) => {
      await prepare(rig)
      rig.fly.failNext({ path: MACHINES }, { status: 429, times: 2 })
      const result = await okOnce(rig)
      assert.strictEqual(
        result.stdout.match(/retrying: Fly API RateLimited \(HTTP 429\)/g)
          ?.length,
        2,
      )
      rig.assertExactlyOnce()
    }))

  for (const status of [500, 502, 503]) {
    it(`${status}: retried within the pass, exit 0`, () =>
      withRig(async (rig) => {
        await prepare(rig)
        rig.fly.failNext({ path: APPS }, { status })
        rig.fly.failNext({ path: MACHINES }, { status })
        const result = await okOnce(rig)
        assert.strictEqual(
          result.stdout.match(
            new RegExp(
              `retrying: Fly API ServerError \\(HTTP ${status}\\)`,
              "g",
            ),
          )?.length,
          2,
        )
        rig.assertExactlyOnce()
      }))
  }

  it("HTML error page with 502: retried as a server error", () =>
    withRig(async (rig) => {
      await prepare(rig)
      rig.fly.failNext(
        { path: MACHINES },
        {
          status: 502,
          body: "<html><body><h1>502 Bad Gateway</h1></body></html>",
          headers: { "content-type": "text/html" },
        },
      )
      const result = await okOnce(rig)
      assert.match(
        result.stdout,
        /retrying: Fly API ServerError \(HTTP 502\) on GET \/v1\/apps\/app-0\/machines\?include_deleted=true: <html>/,
      )
      rig.assertExactlyOnce()
    }))

  it("HTML page with 200 on the app list: exits 1, body is not JSON", () =>
    withRig(async (rig) => {
      await prepare(rig)
      rig.fly.failNext(
        { path: APPS },
        {
          status: 200,
          body: "<html><body>Sign in to continue</body></html>",
          headers: { "content-type": "text/html" },
        },
      )
      const failed = await rig.once()
      assert.strictEqual(failed.code, 1)
      assert.match(
        failed.stdout,
        /Fly API BadResponse \(HTTP 200\) on GET \/v1\/apps\?org_slug=fault-org: the body is not JSON/,
      )
      await okOnce(rig)
      rig.assertExactlyOnce()
    }))

  it("truncated JSON on the app list: exits 1, body is not JSON", () =>
    withRig(async (rig) => {
      await prepare(rig)
      rig.fly.failNext(
        { path: APPS },
        { status: 200, body: '{"total_apps":2,"apps":[{"name":"app-' },
      )
      const failed = await rig.once()
      assert.strictEqual(failed.code, 1)
      assert.match(failed.stdout, /BadResponse \(HTTP 200\).*not JSON/)
      await okOnce(rig)
      rig.assertExactlyOnce()
    }))

  it("truncated JSON on one app: that app waits, the other is alerted", () =>
    withRig(async (rig) => {
      await prepare(rig)
      rig.fly.failNext({ path: MACHINES }, { status: 200, body: '[{"id":"0' })
      const result = await okOnce(rig)
      assert.match(
        result.stdout,
        /skipping an app this pass: its machines could not be listed.*BadResponse \(HTTP 200\) on GET \/v1\/apps\/app-0\/machines/,
      )
      assert.strictEqual(rig.posted().length, 1)
      await okOnce(rig)
      rig.assertExactlyOnce()
    }))

  it("wrong types: that machine is skipped, the others alerted", () =>
    withRig(async (rig) => {
      const ids = rig.seed(2, 2)
      await okOnce(rig)
      rig.start(ids[0]!)
      rig.start(ids[1]!)
      rig.exit(ids[3]!)
      rig.fly.setRaw(ids[0]!, {
        id: ids[0],
        state: 42,
        region: ["ams"],
        events: "nope",
      })
      const result = await okOnce(rig)
      assert.match(
        result.stdout,
        new RegExp(
          `skipping a machine this pass: its payload did not decode.*machine=${ids[0]}`,
        ),
      )
      assert.deepStrictEqual(
        passCounts(result.stdout, ["skipped_machines"]),
        [1],
      )
      assert.strictEqual(rig.posted().length, 2)
      rig.fly.setRaw(ids[0]!, undefined)
      await okOnce(rig)
      rig.assertExactlyOnce()
    }))

  it("5 000 machines in one app: 100 new events, each alerted once", () =>
    withRig(async (rig) => {
      rig.fly.addApp("big")
      const ids: Array<string> = []
      const past = rig.fly.now() - 3_600_000
      for (let i = 0; i < 5000; i++) {
        const id = `b${i.toString(16).padStart(13, "0")}`
        rig.fly.addMachine("big", { id, name: `big-${i}`, region: "ams" })
        rig.fly.emit(id, {
          type: "launch",
          status: "created",
          timestamp: past + i,
        })
        rig.fly.exit(id, { requestedStop: true, timestamp: past + i + 5000 })
        ids.push(id)
      }
      await okOnce(rig)
      for (let i = 0; i < 5000; i += 50) rig.start(ids[i]!)
      const started = Date.now()
      const result = await okOnce(rig)
      assert.deepStrictEqual(
        passCounts(result.stdout, ["machines", "new_events", "alerts_sent"]),
        [5000, 100, 100],
      )
      assert.strictEqual(rig.discord.messages.length - 1, 10)
      rig.assertExactlyOnce()
      console.log(
        `5000-machine pass with 100 alerts: ${Date.now() - started} ms`,
      )
    }))

  it("an event with no id: keyed by machine, time and kind, once", () =>
    withRig(async (rig) => {
      const ids = rig.seed(1, 2)
      await okOnce(rig)
      rig.track(
        ids[0]!,
        rig.fly.emit(ids[0]!, {
          type: "start",
          status: "started",
          id: null,
          request: {},
        }),
      )
      rig.track(
        ids[1]!,
        rig.fly.emit(ids[1]!, {
          type: "exit",
          status: "stopped",
          id: null,
          request: { exit_event: { exit_code: 7 } },
        }),
      )
      await okOnce(rig)
      await okOnce(rig)
      rig.assertExactlyOnce()
      assert.match(rig.posted()[0]!, /^[0-9a-f]+:\d+:(start|exit):/)
    }))

  it("duplicate ids: one event listed twice is announced once", () =>
    withRig(async (rig) => {
      const ids = rig.seed(1, 2)
      await okOnce(rig)
      const id = ids[0]!
      const started = rig.start(id)
      const [, ...older] = rig.fly.history(id)
      rig.fly.setRaw(id, {
        id,
        name: "web-0-0",
        state: "started",
        region: "ams",
        config: { guest: { cpu_kind: "shared", cpus: 1, memory_mb: 256 } },
        events: [started, started, ...older],
      })
      await okOnce(rig)
      await okOnce(rig)
      rig.assertExactlyOnce()
    }))
})

describe("Fly faults, core pass in-process (short timeout and retries)", () => {
  // Short enough for a row, long enough that an answered request on a busy
  // machine (fake Fly and pass share one process) never reaches it.
  const shortTimeout = {
    ...quickRetry,
    requestTimeout: Duration.seconds(2),
  }

  it("hung connection, once: timed out, retried, nothing lost", () =>
    withRig(async (rig) => {
      await prepare(rig)
      rig.fly.failNext({ path: MACHINES }, { status: 200, hang: true })
      const exit = await rig.inProcess({ policy: shortTimeout })
      assert.isTrue(Exit.isSuccess(exit), rig.log())
      assert.match(
        rig.log(),
        /retrying: Fly API Timeout on GET \/v1\/apps\/app-0\/machines.*no answer within 2s/,
      )
      rig.assertExactlyOnce()
    }))

  it("hung connection on every try: the app waits a pass, the other is alerted", () =>
    withRig(async (rig) => {
      await prepare(rig)
      rig.fly.failNext(
        { path: MACHINES },
        { status: 200, hang: true, times: 3 },
      )
      const exit = await rig.inProcess({ policy: shortTimeout })
      assert.isTrue(Exit.isSuccess(exit), rig.log())
      assert.match(
        rig.log(),
        /skipping an app this pass: its machines could not be listed.*Timeout/,
      )
      assert.strictEqual(rig.posted().length, 1)
      assert.isTrue(
        Exit.isSuccess(await rig.inProcess({ policy: shortTimeout })),
      )
      rig.assertExactlyOnce()
    }))

  it("hung app list on every try: the pass fails, says so, recovers", () =>
    withRig(async (rig) => {
      await prepare(rig)
      rig.fly.failNext({ path: APPS }, { status: 200, hang: true, times: 3 })
      const exit = await rig.inProcess({ policy: shortTimeout })
      assert.isTrue(Exit.isFailure(exit))
      assert.match(
        rig.log(),
        /Fly API Timeout on GET \/v1\/apps\?org_slug=fault-org: no answer within 2s/,
      )
      assert.isTrue(
        Exit.isSuccess(await rig.inProcess({ policy: shortTimeout })),
      )
      rig.assertExactlyOnce()
    }))

  it("503 past every retry: the pass fails, then recovers", () =>
    withRig(async (rig) => {
      await prepare(rig)
      rig.fly.failNext({ path: APPS }, { status: 503, times: 3 })
      const exit = await rig.inProcess()
      assert.isTrue(Exit.isFailure(exit))
      assert.match(
        rig.log(),
        /Fly API ServerError \(HTTP 503\) on GET \/v1\/apps/,
      )
      assert.isTrue(Exit.isSuccess(await rig.inProcess()))
      rig.assertExactlyOnce()
    }))

  it("429 past every retry on one app: it waits a pass", () =>
    withRig(async (rig) => {
      await prepare(rig)
      rig.fly.failNext({ path: MACHINES }, { status: 429, times: 3 })
      assert.isTrue(Exit.isSuccess(await rig.inProcess()))
      assert.match(
        rig.log(),
        /skipping an app this pass.*RateLimited \(HTTP 429\)/,
      )
      assert.isTrue(Exit.isSuccess(await rig.inProcess()))
      rig.assertExactlyOnce()
    }))

  it("a slow retry schedule is not needed to recover", () =>
    withRig(async (rig) => {
      await prepare(rig)
      const noRetry = { ...quickRetry, fly: Schedule.stop }
      rig.fly.failNext({ path: MACHINES }, { status: 502 })
      assert.isTrue(Exit.isSuccess(await rig.inProcess({ policy: noRetry })))
      assert.isTrue(Exit.isSuccess(await rig.inProcess({ policy: noRetry })))
      rig.assertExactlyOnce()
    }))
})

describe("secrets", () => {
  it("no token or webhook URL in any log line or Discord message", () => {
    assertNoSecrets()
  })
})
