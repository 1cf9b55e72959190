import { assert, describe, it } from "@effect/vitest"
import { env, SELF } from "cloudflare:test"
import { isStale } from "../src/Health.ts"
import { LastPass } from "../src/LastPass.ts"
import { control } from "./control.ts"
import worker from "../src/index.ts"
import { freshFakes, lastPass, tick } from "./support.ts"

const get = async (path: string, init?: RequestInit) => {
  const response = await SELF.fetch(`http://monitor.test${path}`, init)
  return { status: response.status, text: await response.text() }
}

const healthz = async () => {
  const { status, text } = await get("/healthz")
  return { status, body: JSON.parse(text), text }
}

describe("/healthz", () => {
  it("is 503 before any pass", async () => {
    assert.deepStrictEqual(await healthz(), {
      status: 503,
      body: { lastPass: null },
      text: '{"lastPass":null}',
    })
  })

  it("serves time, outcome and counts of the last pass, nothing more", async () => {
    const { urls, vars } = await freshFakes()
    await control.addApp("secret-project")
    await control.addMachine({
      app: "secret-project",
      id: "0c7a51e4d93b28",
      name: "hidden-name",
      region: "ams",
    })
    await control.start("0c7a51e4d93b28")
    await tick({ ...vars, LOG_LEVEL: "Off" })

    const { status, body, text } = await healthz()
    const recorded = await lastPass()
    assert.strictEqual(status, 200)
    assert.deepStrictEqual(body, {
      lastPass: {
        finishedAt: recorded.finishedAt,
        ok: true,
        stale: false,
        counts: recorded.counts,
        subrequests: { total: 3, fly: 2, refused: 0 },
        failure: null,
      },
    })
    assert.strictEqual(body.lastPass.counts.machines, 1)
    for (const secret of [
      "secret-project",
      "hidden-name",
      "0c7a51e4d93b28",
      "acme",
      urls.flyUrl,
      urls.webhookUrl,
    ])
      assert.notInclude(text, secret)
  })

  it("is 503 with the kind of failure, never its message", async () => {
    const { vars } = await freshFakes()
    await tick({
      ...vars,
      FLY_API_TOKEN: "FlyV1 fm2_revoked",
      LOG_LEVEL: "Off",
    })

    const { status, body, text } = await healthz()
    const recorded = await lastPass()
    assert.strictEqual(status, 503)
    assert.deepStrictEqual(body.lastPass.failure, {
      kind: "FlyApiError",
      reason: "Unauthorized",
    })
    assert.strictEqual(body.lastPass.ok, false)
    assert.strictEqual(body.lastPass.counts, null)
    // The message stays in D1, for whoever reads it there.
    assert.include(recorded.failure.message, "token rejected")
    assert.notInclude(text, "token rejected")
    assert.notInclude(text, "acme")
  })

  it("is 503 once three cron events passed without a pass", async () => {
    const old = new LastPass({
      finishedAt: new Date(Date.now() - 3_600_000).toISOString(),
      cron: "*/5 * * * *",
      ok: true,
    })
    await env.DB.prepare(
      "INSERT INTO meta (key, value, updated_at) VALUES ('last_pass', ?, 0)",
    )
      .bind(JSON.stringify(old))
      .run()

    const { status, body } = await healthz()
    assert.strictEqual(status, 503)
    assert.strictEqual(body.lastPass.stale, true)
  })

  it("counts staleness in cron events, with a minute of grace", () => {
    const at = (finishedAt: string, cron: string) =>
      new LastPass({ finishedAt, cron, ok: true })
    const fiveMinutes = at("2026-03-01T10:00:03.000Z", "*/5 * * * *")
    assert.isFalse(isStale(fiveMinutes, Date.parse("2026-03-01T10:15:59Z")))
    assert.isTrue(isStale(fiveMinutes, Date.parse("2026-03-01T10:16:01Z")))
    const hourly = at("2026-03-01T10:00:05.000Z", "0 * * * *")
    assert.isFalse(isStale(hourly, Date.parse("2026-03-01T13:00:30Z")))
    assert.isTrue(isStale(hourly, Date.parse("2026-03-01T13:01:01Z")))
  })

  it("answers 404 everywhere else", async () => {
    for (const [path, method] of [
      ["/", "GET"],
      ["/healthz/", "GET"],
      ["/healthz?x=1", "POST"],
      ["/events", "GET"],
      ["/__scheduled", "GET"],
    ] as const)
      assert.deepStrictEqual(
        [path, method, (await get(path, { method })).status],
        [path, method, 404],
      )
  })
})

describe("/status", () => {
  it("is 401 without the bearer token, 404 when none is configured", async () => {
    const { vars } = await freshFakes()
    const token = "status-secret-token"
    const call = (authorization?: string, configured = true) =>
      worker.fetch(
        new Request("http://monitor.test/status", {
          headers: authorization === undefined ? {} : { authorization },
        }),
        { ...vars, ...(configured ? { STATUS_TOKEN: token } : {}) },
      )
    const missing = await call()
    const wrong = await call("Bearer not-it")
    const off = await call(`Bearer ${token}`, false)
    assert.deepStrictEqual(
      [missing.status, wrong.status, off.status],
      [401, 401, 404],
    )
    assert.notInclude(await wrong.text(), token)
  })

  it("returns running machines, rates and the month so far", async () => {
    const { vars } = await freshFakes()
    await control.addApp("api")
    await control.addMachine({
      app: "api",
      id: "148ed193b95089",
      name: "api-1",
      region: "sjc",
      guest: { cpu_kind: "performance", cpus: 1, memory_mb: 2048 },
    })
    await tick({ ...vars, LOG_LEVEL: "Off" })
    await control.start("148ed193b95089")
    await tick({ ...vars, LOG_LEVEL: "Off" })
    const response = await worker.fetch(
      new Request("http://monitor.test/status", {
        headers: { authorization: "Bearer status-secret-token" },
      }),
      { ...vars, STATUS_TOKEN: "status-secret-token" },
    )
    const body = (await response.json()) as {
      running: Array<Record<string, unknown>>
      budgetUsd: number | null
    }
    assert.strictEqual(response.status, 200)
    assert.deepStrictEqual(
      body.running.map((m) => [m.app, m.machineId, m.name, m.region, m.size]),
      [["api", "148ed193b95089", "api-1", "sjc", "performance-1x 2048MB"]],
    )
    // performance-1x in sjc: $31.00 × 2.32/1.94 per 720 hours.
    assert.approximately(
      body.running[0]!.hourlyUsd as number,
      (31 * 2.32) / 1.94 / 720,
      1e-9,
    )
    assert.strictEqual(body.running[0]!.estimated, false)
    assert.strictEqual(body.budgetUsd, null)
  })
})

describe("/metrics", () => {
  it("serves the last pass and row counts from D1, behind the status token", async () => {
    const { vars } = await freshFakes()
    await control.addApp("api")
    await control.addMachine({
      app: "api",
      id: "m1",
      name: "api-1",
      region: "iad",
    })
    await tick({ ...vars, LOG_LEVEL: "Off" })
    await control.start("m1")
    await tick({ ...vars, LOG_LEVEL: "Off" })
    const call = (authorization?: string) =>
      worker.fetch(
        new Request("http://monitor.test/metrics", {
          headers: authorization === undefined ? {} : { authorization },
        }),
        { ...vars, STATUS_TOKEN: "metrics-token" },
      )
    assert.strictEqual((await call()).status, 401)
    const response = await call("Bearer metrics-token")
    const text = await response.text()
    const recorded = await lastPass()
    const lines = text.split("\n").filter((line) => !line.startsWith("#"))
    assert.strictEqual(response.status, 200)
    assert.includeMembers(lines, [
      "flymon_last_pass_ok 1",
      `flymon_last_pass_timestamp_seconds ${Date.parse(recorded.finishedAt) / 1000}`,
      'flymon_last_pass_count{count="newEvents"} 1',
      'flymon_last_pass_count{count="alertsSent"} 1',
      'flymon_store_rows{table="events"} 1',
      'flymon_store_rows{table="machines"} 1',
      'flymon_store_rows{table="runs"} 1',
    ])
    assert.include(text, "# TYPE flymon_store_rows gauge")
  })
})
