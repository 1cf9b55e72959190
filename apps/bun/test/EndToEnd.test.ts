import { footerKeys } from "@flymon/core/DiscordMessage"
import { FakeDiscord } from "@flymon/testkit/FakeDiscord"
import { FakeFly, type FakeEvent } from "@flymon/testkit/FakeFly"
import {
  createDemoOrg,
  demoMachines,
  demoOrg,
  demoTicks,
} from "@flymon/testkit/scenario"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, assert, beforeEach, describe, it } from "vitest"
import { runCli, startCli } from "./cli.ts"

const FLY_TOKEN = "FlyV1 fm2_e2e-secret-macaroon"
const WEBHOOK_TOKEN = "e2e-secret-webhook-token"
const HINT =
  "Set the variables in apps/bun/.env.local (see README.md), " +
  "or try the simulated org with `pnpm demo`."
const BILLING = new Set(["start", "stop", "exit"])

let fly: FakeFly
let discord: FakeDiscord
let dir: string

beforeEach(async () => {
  fly = await FakeFly.start({ token: FLY_TOKEN, org: demoOrg })
  discord = await FakeDiscord.start()
  dir = mkdtempSync(join(tmpdir(), "flymon-e2e-"))
})

afterEach(async () => {
  await Promise.all([fly.stop(), discord.stop()])
  rmSync(dir, { recursive: true, force: true })
})

const env = () => ({
  FLY_API_TOKEN: FLY_TOKEN,
  FLY_ORG_SLUG: demoOrg,
  FLY_API_BASE_URL: fly.url,
  DISCORD_WEBHOOK_URL: discord.webhookUrl("777", WEBHOOK_TOKEN),
  DATABASE_PATH: join(dir, "nested", "monitor.db"),
  LOG_LEVEL: "Debug",
  // The scenario restarts machines often enough to look like a restart
  // storm; this test wants every billing event announced on its own.
  STORM_EVENTS: "off",
})

const keyOf = (machineId: string, e: FakeEvent) =>
  e.id ?? `${machineId}:${e.timestamp}:${e.type}:${e.status}:${e.source}`

const allEvents = () =>
  Object.values(demoMachines).flatMap((id) =>
    fly.history(id).map((event) => ({ id, event })),
  )

const footers = () =>
  discord.messages.flatMap((m) =>
    (m.embeds ?? []).map((e: { footer: { text: string } }) => e.footer.text),
  )

/** Keys of the Fly events announced, in the order they were posted. */
const postedKeys = () => footers().flatMap(footerKeys)

/** Cost notices (runaway machines and the like), by their once-only key. */
const noticeKeys = () =>
  footers().filter((text) => footerKeys(text).length === 0)

const latestStart = (machineId: string) =>
  fly.history(machineId).find((event) => event.type === "start")!.timestamp

describe("the Bun runner, end to end", () => {
  it("announces every new billing event exactly once across runs", async () => {
    createDemoOrg(fly)
    const output: Array<string> = []
    const once = async () => {
      const result = await runCli(["--once"], env(), { cwd: dir })
      output.push(result.stdout, result.stderr)
      assert.strictEqual(result.code, 0, result.stderr + result.stdout)
    }

    await once()
    // Two machines have been running for days: each gets a runaway alert.
    const runaways = [
      `runaway ${demoMachines.shopWebAms} ${latestStart(demoMachines.shopWebAms)} #0`,
      `runaway ${demoMachines.sandbox} ${latestStart(demoMachines.sandbox)} #0`,
    ]
    assert.strictEqual(discord.messages.length, 2)
    assert.sameMembers(noticeKeys(), runaways)
    assert.match(
      discord.messages[0]!.content!,
      /^Now watching org `demo-org`: 3 apps, 5 machines, 2 running\./,
    )

    const expected: Array<string> = []
    for (const tick of demoTicks) {
      const before = new Set(
        allEvents().map(({ id, event }) => keyOf(id, event)),
      )
      tick.apply(fly)
      const added = allEvents()
        .filter(({ id, event }) => !before.has(keyOf(id, event)))
        .filter(({ event }) => BILLING.has(event.type))
        .sort((a, b) => a.event.timestamp - b.event.timestamp)
      const sentBefore = discord.requests.length
      await once()
      expected.push(...added.map(({ id, event }) => keyOf(id, event)))
      assert.sameMembers(postedKeys(), expected, tick.label)
      if (added.length === 0)
        assert.strictEqual(discord.requests.length, sentBefore, tick.label)
    }

    // The forgotten sandbox was stopped in the last tick: its exit alert
    // says how long it ran, so no separate resolved note.
    assert.sameMembers(noticeKeys(), runaways)

    // A restart with nothing new sends nothing at all.
    const sentBefore = discord.requests.length
    await once()
    assert.strictEqual(discord.requests.length, sentBefore)
    assert.strictEqual(new Set(postedKeys()).size, postedKeys().length)
    assert.strictEqual(postedKeys().length, 12)

    const everything = output.join("\n") + JSON.stringify(discord.messages)
    for (const secret of ["e2e-secret-macaroon", WEBHOOK_TOKEN])
      assert.notInclude(everything, secret)
    assert.match(output.join("\n"), /pass done.*new_events=/)
  })

  it("names every missing variable and exits 2", async () => {
    const result = await runCli(
      ["--once"],
      {
        DATABASE_PATH: join(dir, "x.db"),
      },
      { cwd: dir },
    )
    assert.strictEqual(result.code, 2)
    assert.deepStrictEqual(result.stderr.trim().split("\n"), [
      "configuration error: FLY_API_TOKEN: missing (required, or FLY_ORGS for several orgs)",
      "configuration error: FLY_ORG_SLUG: missing (required)",
      "configuration error: DISCORD_WEBHOOK_URL: missing (required, or a last route in DISCORD_ROUTES for every app)",
      HINT,
    ])
  })

  it("rejects a bad interval and URL without echoing the webhook", async () => {
    const result = await runCli(
      ["--once"],
      {
        ...env(),
        POLL_INTERVAL: "soon",
        DISCORD_WEBHOOK_URL: `not a url ${WEBHOOK_TOKEN}`,
      },
      { cwd: dir },
    )
    assert.strictEqual(result.code, 2)
    assert.deepStrictEqual(result.stderr.trim().split("\n"), [
      "configuration error: DISCORD_WEBHOOK_URL: invalid: expected an http(s) URL (value not shown: it is a secret)",
      'configuration error: POLL_INTERVAL: invalid: expected a duration such as "60 seconds", "30s", "5m" or "4h", got "soon"',
      HINT,
    ])
  })

  it("exits 1 when the pass fails, and says why", async () => {
    createDemoOrg(fly)
    const result = await runCli(
      ["--once"],
      {
        ...env(),
        FLY_API_TOKEN: "fo1_revoked-user-token",
      },
      { cwd: dir },
    )
    assert.strictEqual(result.code, 1)
    assert.match(result.stdout + result.stderr, /token rejected \(HTTP 401\)/)
    assert.notInclude(result.stdout + result.stderr, "revoked-user-token")
    assert.strictEqual(discord.requests.length, 0)
  })

  it("prints the Discord payloads with --dry-run and sends nothing", async () => {
    createDemoOrg(fly)
    const first = await runCli(["--once", "--dry-run"], env(), { cwd: dir })
    demoTicks[0]!.apply(fly)
    const second = await runCli(["--once", "--dry-run"], env(), { cwd: dir })
    assert.deepStrictEqual([first.code, second.code], [0, 0])
    assert.strictEqual(discord.requests.length, 0)
    assert.include(
      first.stdout,
      '# route: default\n{\n  "username": "Fly Machine Monitor",\n  "allowed_mentions": {\n    "parse": []\n  },\n  "content": "Now watching org `demo-org`',
    )
    assert.include(second.stdout, '"allowed_mentions": {')
    assert.include(
      second.stdout,
      `event ${fly.history(demoMachines.bait)[0]!.id}`,
    )
  })

  it("loops on its interval and stops cleanly on SIGTERM", async () => {
    createDemoOrg(fly)
    const run = startCli([], { ...env(), POLL_INTERVAL: "200ms" }, { cwd: dir })
    const passes = () => run.output().match(/message="pass done"/g)?.length ?? 0
    for (let waited = 0; passes() < 3 && waited < 20_000; waited += 50)
      await new Promise((resolve) => setTimeout(resolve, 50))
    demoTicks[0]!.apply(fly)
    const seen = passes()
    for (let waited = 0; passes() < seen + 2 && waited < 20_000; waited += 50)
      await new Promise((resolve) => setTimeout(resolve, 50))
    run.child.kill("SIGTERM")
    const result = await run.done
    assert.deepStrictEqual([result.code, result.signal], [0, null])
    assert.isAtLeast(passes(), 5)
    assert.deepStrictEqual(postedKeys(), [
      fly.history(demoMachines.bait)[0]!.id,
    ])
    assert.include(
      result.stdout,
      'message="polling every 200ms; stop with Ctrl+C"',
    )
  })

  it("prints running machines, rates and the month so far with status", async () => {
    createDemoOrg(fly)
    const pass = await runCli(["--once"], env(), { cwd: dir })
    assert.strictEqual(pass.code, 0)
    const sentBefore = discord.requests.length
    const flyBefore = fly.requests.length
    const result = await runCli(
      ["status"],
      { DATABASE_PATH: env().DATABASE_PATH },
      { cwd: dir },
    )
    assert.strictEqual(result.code, 0, result.stderr)
    const lines = result.stdout.trim().split("\n")
    assert.match(
      lines[0]!,
      /^Fly machines running at \d{4}-\d\d-\d\d \d\d:\d\d UTC$/,
    )
    assert.deepStrictEqual(lines[2]!.split(/\s{2,}/), [
      "APP",
      "MACHINE",
      "ID",
      "REGION",
      "SIZE",
      "RUNNING",
      "RATE",
      "MONTH",
    ])
    // Longest running first: the sandbox started 21 days ago, shop-web 2.
    const rows = lines.slice(3, 5).map((line) => line.split(/\s{2,}/))
    assert.deepStrictEqual(
      rows.map((row) => [row.slice(0, 5), row[6]]),
      [
        [
          [
            "dev-sandbox",
            "scratch-box-1180",
            demoMachines.sandbox,
            "sjc",
            "shared-cpu-2x 512MB",
          ],
          "$0.0064/h",
        ],
        [
          [
            "shop-web",
            "wandering-meadow-4821",
            demoMachines.shopWebAms,
            "ams",
            "shared-cpu-1x 256MB",
          ],
          "$0.0027/h",
        ],
      ],
    )
    // Started 21 and 2 days before the org was made, a few seconds ago.
    assert.match(rows[0]![5]!, /^(20 d 23 h|21 d)$/)
    assert.match(rows[1]![5]!, /^(1 d 23 h|2 d)$/)
    assert.match(
      result.stdout,
      /\n\d{4}-\d\d: month to date ≈ \$\d+\.\d\d, projected ≈ \$\d+\.\d\d if what runs now keeps running\n/,
    )
    assert.deepStrictEqual(
      [discord.requests.length, fly.requests.length],
      [sentBefore, flyBefore],
    )
  })

  it("logs JSON lines when its output is not a terminal", async () => {
    createDemoOrg(fly)
    const result = await runCli(
      ["--once"],
      { ...env(), LOG_FORMAT: "auto", LOG_LEVEL: "Info" },
      { cwd: dir },
    )
    assert.strictEqual(result.code, 0)
    const lines = result.stdout
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as Record<string, unknown>)
    const done = lines.find((line) => line.message === "pass done")!
    assert.deepStrictEqual(
      [done.logLevel, (done.annotations as Record<string, unknown>).pass],
      ["INFO", 1],
    )
    assert.strictEqual(
      (done.annotations as Record<string, unknown>).machines,
      5,
    )
  })

  it("names DATABASE_PATH when the database cannot be opened or is missing", async () => {
    const folder = await runCli(
      ["--once"],
      { ...env(), DATABASE_PATH: dir },
      { cwd: dir },
    )
    const missing = await runCli(
      ["status"],
      { DATABASE_PATH: join(dir, "typo.db") },
      { cwd: dir },
    )
    assert.deepStrictEqual([folder.code, missing.code], [1, 1])
    assert.strictEqual(
      folder.stderr.trim(),
      `could not start: the database at DATABASE_PATH=${dir}: unable to open database file`,
    )
    assert.strictEqual(
      missing.stderr.trim(),
      `no database at DATABASE_PATH=${join(dir, "typo.db")}: run the monitor first, or point DATABASE_PATH at its database`,
    )
  })
})
