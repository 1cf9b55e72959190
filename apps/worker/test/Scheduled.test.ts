import { assert, describe, it } from "@effect/vitest"
import { afterEach, beforeEach, vi } from "vitest"
import { control, type FakeEvent } from "./control.ts"
import {
  EVENT_ROWS,
  footers,
  freshFakes,
  lastPass,
  MACHINE_ROWS,
  rows,
  tick,
} from "./support.ts"

const DAY = 86_400_000
const web = "148ed193b95089"
const job = "3287d113f05e98"

/**
 * shop-web runs one machine, started 20 minutes ago (well inside the core's
 * runaway limit); shop-worker has one that ran and exited days ago.
 */
const twoApps = async () => {
  const now = Date.now()
  await control.addApp("shop-web")
  await control.addMachine({
    app: "shop-web",
    id: web,
    name: "wandering-meadow-4821",
    region: "ams",
    guest: { cpu_kind: "shared", cpus: 1, memory_mb: 256 },
  })
  await control.emit({
    machineId: web,
    type: "launch",
    status: "created",
    timestamp: now - 6 * DAY,
  })
  const webStart = await control.emit({
    machineId: web,
    type: "start",
    status: "started",
    request: {},
    timestamp: now - 20 * 60_000,
  })
  await control.addApp("shop-worker")
  await control.addMachine({
    app: "shop-worker",
    id: job,
    name: "rough-lake-5530",
    region: "fra",
    guest: { cpu_kind: "performance", cpus: 2, memory_mb: 4096 },
  })
  const jobStart = await control.emit({
    machineId: job,
    type: "start",
    status: "started",
    request: {},
    timestamp: now - 9 * DAY,
  })
  const jobExit = await control.exit(job, {
    exitCode: 0,
    timestamp: now - 9 * DAY + 60_000,
  })
  return { webStart, jobStart, jobExit }
}

const eventRow = (
  event: FakeEvent,
  machineId: string,
  app: string,
  options: { baseline: boolean; exitCode?: number },
) => ({
  key: event.id,
  machine_id: machineId,
  app,
  type: event.type,
  status: event.status,
  source: event.source,
  timestamp: event.timestamp,
  exit_code: options.exitCode ?? null,
  oom_killed: options.exitCode === undefined ? null : 0,
  requested_stop: options.exitCode === undefined ? null : 0,
  restart_count: options.exitCode === undefined ? null : 0,
  baseline: options.baseline ? 1 : 0,
  notified: 1,
  claimed_until: null,
})

const flyPathsSince = async (from: number) =>
  (await control.flyRequests())
    .slice(from)
    .map((r) => `${r.method} ${r.path} ${r.status}`)
    .sort()

const ONE_POLL = [
  "GET /v1/apps 200",
  "GET /v1/apps/shop-web/machines 200",
  "GET /v1/apps/shop-worker/machines 200",
]

let logged: Array<string> = []
beforeEach(() => {
  logged = []
  vi.spyOn(console, "log").mockImplementation((line: unknown) => {
    logged.push(String(line))
  })
})
afterEach(() => {
  vi.restoreAllMocks()
})

describe("scheduled", () => {
  it("baselines, then announces a start and a crash, then stays quiet", async () => {
    const { urls, vars } = await freshFakes()
    const history = await twoApps()

    // Tick 1: the baseline stores history as already announced.
    await tick(vars)
    assert.deepStrictEqual(
      (await control.discordMessages()).map((m) => m.content),
      [
        "Now watching org `acme`: 2 apps, 2 machines, 1 running. " +
          "Machine start, stop and exit events from now on will be posted here.",
      ],
    )
    assert.deepStrictEqual(await flyPathsSince(0), ONE_POLL)
    assert.deepStrictEqual(await rows(EVENT_ROWS), [
      eventRow(history.jobStart, job, "shop-worker", { baseline: true }),
      eventRow(history.jobExit, job, "shop-worker", {
        baseline: true,
        exitCode: 0,
      }),
      eventRow(history.webStart, web, "shop-web", { baseline: true }),
    ])

    // Tick 2: the stopped worker starts.
    const started = await control.start(job)
    await tick(vars)
    // Tick 3: it crashes.
    const crashed = await control.exit(job, { exitCode: 1 })
    await tick(vars)
    // Tick 4: nothing happens.
    await tick(vars)

    const messages = await control.discordMessages()
    assert.deepStrictEqual(
      messages
        .slice(1)
        .map((m) =>
          (m.embeds ?? []).map((e) => [e.title, e.footer.text] as const),
        ),
      [
        [["rough\\-lake\\-5530 started", `event ${started.id}`]],
        [
          [
            "rough\\-lake\\-5530 crashed with exit code 1",
            `event ${crashed.id}`,
          ],
        ],
      ],
    )
    assert.deepStrictEqual(
      messages[2]?.embeds?.[0]?.fields.find((f) => f.name === "Exit")?.value,
      "code 1 · OOM no · requested stop no · restarts 0",
    )
    assert.deepStrictEqual(
      await flyPathsSince(3),
      [...ONE_POLL, ...ONE_POLL, ...ONE_POLL].sort(),
    )
    assert.deepStrictEqual(await rows(EVENT_ROWS), [
      eventRow(history.jobStart, job, "shop-worker", { baseline: true }),
      eventRow(history.jobExit, job, "shop-worker", {
        baseline: true,
        exitCode: 0,
      }),
      eventRow(history.webStart, web, "shop-web", { baseline: true }),
      eventRow(started, job, "shop-worker", { baseline: false }),
      eventRow(crashed, job, "shop-worker", { baseline: false, exitCode: 1 }),
    ])
    assert.deepStrictEqual(await rows(MACHINE_ROWS), [
      {
        id: web,
        app: "shop-web",
        name: "wandering-meadow-4821",
        region: "ams",
        size: "shared-cpu-1x 256MB",
        state: "started",
        last_event_key: history.webStart.id,
        last_event_at: history.webStart.timestamp,
      },
      {
        id: job,
        app: "shop-worker",
        name: "rough-lake-5530",
        region: "fra",
        size: "performance-2x 4096MB",
        state: "stopped",
        last_event_key: crashed.id,
        last_event_at: crashed.timestamp,
      },
    ])

    const { durationMs, ...counts } = (await lastPass()).counts
    assert.isNumber(durationMs)
    assert.deepStrictEqual(counts, {
      apps: 2,
      appsPolled: 2,
      machines: 2,
      running: 1,
      skippedMachines: 0,
      deferredMachines: 0,
      failedApps: 0,
      newEvents: 0,
      alertsSent: 0,
      flyRequests: 3,
      baseline: false,
    })

    // Logs: one JSON object a line, each pass summed up, no secret.
    const lines = logged.map((line) => JSON.parse(line))
    const done = lines.filter((line) => line.message === "pass done")
    assert.deepStrictEqual(
      done.map((line) => [
        line.annotations.cron,
        line.annotations.new_events,
        line.annotations.alerts_sent,
      ]),
      [
        ["*/5 * * * *", 0, 0],
        ["*/5 * * * *", 1, 1],
        ["*/5 * * * *", 1, 1],
        ["*/5 * * * *", 0, 0],
      ],
    )
    const text = logged.join("\n")
    assert.notInclude(text, "worker-test-macaroon")
    assert.notInclude(text, new URL(urls.webhookUrl).pathname)
  })

  it("announces each event once when two passes run at the same time", async () => {
    const { vars } = await freshFakes()
    await twoApps()
    await tick(vars)
    await control.latency(20)
    const events = [
      await control.start(job),
      await control.exit(job, { exitCode: 1 }),
      await control.start(job),
      await control.exit(web, { requestedStop: true }),
    ]

    await Promise.all([tick(vars), tick(vars), tick(vars)])

    const announced = footers((await control.discordMessages()).slice(1))
    assert.deepStrictEqual(
      announced.sort(),
      events.map((e) => `event ${e.id}`).sort(),
    )
    assert.deepStrictEqual(
      await rows(
        "SELECT count(*) AS n FROM events WHERE baseline = 0 AND notified_at IS NOT NULL AND claimed_until IS NULL",
      ),
      [{ n: 4 }],
    )
    assert.strictEqual((await control.flyRequests()).length, 3 + 3 * 3)
    const sent = logged
      .map((line) => JSON.parse(line))
      .filter((line) => line.message === "pass done")
      .map((line) => line.annotations.alerts_sent)
    assert.strictEqual(sent.length, 4)
    assert.strictEqual(
      sent.reduce((a, b) => a + b, 0),
      4,
    )
  })

  it("reports each bad variable by name, never its value, and runs no pass", async () => {
    const { vars } = await freshFakes()
    const { FLY_API_TOKEN: _, ...withoutToken } = vars
    await tick({
      ...withoutToken,
      DISCORD_WEBHOOK_URL: "discord-secret-not-a-url",
      LOG_LEVEL: "Chatty",
    })

    const problems = logged
      .map((line) => JSON.parse(line))
      .filter((line) => line.logLevel === "ERROR")
      .map((line) => [line.message, line.annotations.variable])
    assert.deepStrictEqual(problems, [
      ["configuration error; pass not run", "FLY_API_TOKEN"],
      ["configuration error; pass not run", "DISCORD_WEBHOOK_URL"],
      ["configuration error; pass not run", "LOG_LEVEL"],
    ])
    assert.notInclude(logged.join("\n"), "discord-secret")
    assert.deepStrictEqual(await control.flyRequests(), [])
    const recorded = await lastPass()
    assert.strictEqual(recorded.ok, false)
    assert.deepStrictEqual(
      [recorded.failure.kind, recorded.failure.reason],
      ["ConfigError", "InvalidConfig"],
    )
    assert.notInclude(recorded.failure.message, "discord-secret")
  })
})
