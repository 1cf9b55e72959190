import { FakeDiscord } from "@flymon/testkit/FakeDiscord"
import { FakeFly } from "@flymon/testkit/FakeFly"
import { mkdtempSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import parsePrometheus from "parse-prometheus-text-format"
import { afterEach, assert, beforeEach, describe, it } from "vitest"
import { startCli } from "./cli.ts"

const TOKEN = "FlyV1 fm2_metrics-test"
let fly: FakeFly
let discord: FakeDiscord
let dir: string

beforeEach(async () => {
  fly = await FakeFly.start({ token: TOKEN, org: "acme" })
  discord = await FakeDiscord.start()
  dir = mkdtempSync(join(tmpdir(), "flymon-metrics-"))
})

afterEach(async () => {
  await Promise.all([fly.stop(), discord.stop()])
  rmSync(dir, { recursive: true, force: true })
})

const freePort = () =>
  new Promise<number>((resolve) => {
    const server = createServer()
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      server.close(() =>
        resolve(typeof address === "object" && address ? address.port : 0),
      )
    })
  })

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const waitFor = async <A>(
  what: string,
  probe: () => Promise<A | undefined>,
): Promise<A> => {
  for (let waited = 0; waited < 20_000; waited += 50) {
    const value = await probe().catch(() => undefined)
    if (value !== undefined) return value
    await sleep(50)
  }
  throw new Error(`timed out waiting for ${what}`)
}

/** Scrapes /metrics into `name{labels}` → number. */
const scrape = async (base: string) => {
  const text = await (await fetch(`${base}/metrics`)).text()
  const values = new Map<string, number>()
  for (const family of parsePrometheus(text)) {
    for (const sample of family.metrics) {
      const labels = Object.entries(sample.labels ?? {})
        .map(([k, v]) => `${k}=${v}`)
        .join(",")
      const key = labels ? `${family.name}{${labels}}` : family.name
      values.set(key, Number(sample.value ?? sample.count))
    }
  }
  return values
}

describe("/metrics and /healthz on the Bun runner", () => {
  it("count passes, requests, events, alerts and rows; say when Discord fails", async () => {
    fly.addApp("web")
    fly.addMachine("web", { id: "m1", name: "web-1", region: "iad" })
    const port = await freePort()
    const base = `http://127.0.0.1:${port}`
    const started = Date.now()
    const run = startCli(
      [],
      {
        FLY_API_TOKEN: TOKEN,
        FLY_ORG_SLUG: "acme",
        FLY_API_BASE_URL: fly.url,
        DISCORD_WEBHOOK_URL: discord.webhookUrl("5", "metrics-webhook-secret"),
        DATABASE_PATH: join(dir, "m.db"),
        POLL_INTERVAL: "300ms",
        METRICS_PORT: String(port),
        DIGEST_HOUR: "off",
      },
      { cwd: dir },
    )
    try {
      await waitFor("a healthy pass", async () =>
        (await fetch(`${base}/healthz`)).status === 200 ? true : undefined,
      )
      fly.start("m1")
      await waitFor("the start alert", async () =>
        discord.messages.some((m) => m.embeds) ? true : undefined,
      )
      // A scrape between two passes: each pass made exactly 2 Fly requests.
      const metrics = await waitFor("a scrape between passes", async () => {
        const values = await scrape(base)
        const passes = values.get("flymon_passes_total") ?? 0
        return passes >= 3 &&
          values.get("flymon_fly_requests_total{status=200}") === 2 * passes &&
          values.get("flymon_pass_duration_seconds") === passes
          ? values
          : undefined
      })
      assert.strictEqual(metrics.get("flymon_events_seen_total"), 1)
      assert.strictEqual(metrics.get("flymon_alerts_sent_total"), 1)
      assert.strictEqual(metrics.get("flymon_discord_rate_limited_total"), 0)
      assert.isFalse(
        [...metrics.keys()].some((k) => k.startsWith("flymon_pass_failures")),
      )
      assert.deepStrictEqual(
        ["events", "machines", "runs", "notices"].map((table) =>
          metrics.get(`flymon_store_rows{table=${table}}`),
        ),
        [1, 1, 1, 0],
      )
      const lastSuccess = metrics.get("flymon_last_success_timestamp_seconds")!
      assert.isAtLeast(lastSuccess * 1000, started)
      assert.isAtMost(lastSuccess * 1000, Date.now())

      // The webhook is deleted: passes fail on delivery, /healthz says so.
      discord.respondNext({
        status: 404,
        body: { message: "Unknown Webhook", code: 10015 },
        times: 1000,
      })
      fly.exit("m1", { exitCode: 1 })
      const unhealthy = await waitFor("an unhealthy /healthz", async () => {
        const response = await fetch(`${base}/healthz`)
        return response.status === 503
          ? ((await response.json()) as {
              ok: boolean
              lastFailure: { reason: string; discordFailing: boolean }
            })
          : undefined
      })
      assert.deepStrictEqual(
        [
          unhealthy.ok,
          unhealthy.lastFailure.reason,
          unhealthy.lastFailure.discordFailing,
        ],
        [false, "DiscordError/WebhookGone", true],
      )
      // Each failed pass held the one undelivered alert; after the 404 the
      // webhook is not called again.
      const after = await waitFor("a scrape between passes", async () => {
        const values = await scrape(base)
        const failed = values.get(
          "flymon_pass_failures_total{reason=DiscordError/WebhookGone}",
        )
        return failed !== undefined &&
          values.get("flymon_alerts_failed_total{reason=WebhookGone}") ===
            failed
          ? values
          : undefined
      })
      assert.deepStrictEqual(
        discord.requests.filter((r) => r.status === 404).length,
        1,
      )
      assert.strictEqual(after.get("flymon_store_rows{table=events}"), 2)
      for (const text of [run.output(), JSON.stringify(unhealthy)])
        assert.notInclude(text, "metrics-webhook-secret")
    } finally {
      run.child.kill("SIGTERM")
    }
    const result = await run.done
    assert.strictEqual(result.code, 0)
  })
})
