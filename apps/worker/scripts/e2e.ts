import { Control } from "@flymon/testkit/Control"
import type { DiscordMessage } from "@flymon/testkit/FakeDiscord"
import {
  createDemoOrg,
  demoMachines,
  demoOrg,
  demoTicks,
} from "@flymon/testkit/scenario"
import { spawn, spawnSync } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"

// The Worker as wrangler runs it: real bundle, local D1 with the shared
// migrations, cron events through /__scheduled, against the fake Fly API and
// fake Discord on 127.0.0.1. Exits non-zero on any mismatch.

const TOKEN = "fm2_e2e-token"
const CRON = "*/5 * * * *"
const READY_TIMEOUT_MS = 30_000
const PASS_TIMEOUT_MS = 15_000
const MONITORED = new Set(["start", "stop", "exit"])

const appDir = fileURLToPath(new URL("..", import.meta.url))
const wrangler = join(appDir, "node_modules/.bin/wrangler")
const work = mkdtempSync(join(tmpdir(), "flymon-worker-e2e-"))
const say = (line: string) => process.stdout.write(`e2e: ${line}\n`)
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      server.close(() =>
        typeof address === "object" && address !== null
          ? resolve(address.port)
          : reject(new Error("no port")),
      )
    })
  })

const wranglerEnv = { ...process.env, WRANGLER_SEND_METRICS: "false" }

class Mismatch extends Error {}

const expectEqual = (what: string, actual: unknown, expected: unknown) => {
  const [a, e] = [JSON.stringify(actual), JSON.stringify(expected)]
  if (a !== e) throw new Mismatch(`${what}\n  expected: ${e}\n  actual:   ${a}`)
  say(`ok: ${what}`)
}

const main = async () => {
  const control = await Control.start({ token: TOKEN, org: demoOrg })
  const { fly, discord } = control
  createDemoOrg(fly)

  const envFile = join(work, "e2e.env")
  writeFileSync(
    envFile,
    [
      `FLY_API_TOKEN=${TOKEN}`,
      `FLY_ORG_SLUG=${demoOrg}`,
      `FLY_API_BASE_URL=${fly.url}`,
      `DISCORD_WEBHOOK_URL=${discord.webhookUrl()}`,
      "LOG_LEVEL=Info",
      // The digest is sent at a time of day: off, so runs do not depend on it.
      "DIGEST_HOUR=off",
    ].join("\n"),
  )
  const persist = join(work, "state")
  const common = ["--persist-to", persist, "--env-file", envFile]

  const migrate = spawnSync(
    wrangler,
    ["d1", "migrations", "apply", "DB", "--local", "--persist-to", persist],
    { cwd: appDir, env: wranglerEnv, encoding: "utf8" },
  )
  if (migrate.status !== 0)
    throw new Error(`migrations failed:\n${migrate.stdout}${migrate.stderr}`)
  say("local D1 migrated")

  const [port, inspector] = [await freePort(), await freePort()]
  const logPath = join(work, "wrangler.log")
  const log: Array<string> = []
  const dev = spawn(
    wrangler,
    [
      "dev",
      "--test-scheduled",
      "--ip",
      "127.0.0.1",
      "--port",
      String(port),
      "--inspector-port",
      String(inspector),
      ...common,
    ],
    { cwd: appDir, env: wranglerEnv, stdio: ["ignore", "pipe", "pipe"] },
  )
  dev.stdout.on("data", (chunk: Buffer) => log.push(chunk.toString()))
  dev.stderr.on("data", (chunk: Buffer) => log.push(chunk.toString()))
  const exited = new Promise<void>((resolve) =>
    dev.once("exit", () => resolve()),
  )
  const base = `http://127.0.0.1:${port}`

  const stopDev = async () => {
    if (dev.exitCode !== null || dev.signalCode !== null) return
    dev.kill("SIGTERM")
    const done = await Promise.race([exited.then(() => true), sleep(5_000)])
    if (done !== true) {
      dev.kill("SIGKILL")
      await exited
    }
  }

  try {
    const healthz = async () => {
      const response = await fetch(`${base}/healthz`)
      return {
        status: response.status,
        body: (await response.json()) as {
          lastPass: { finishedAt: string; ok: boolean } | null
        },
      }
    }

    const started = Date.now()
    for (;;) {
      if (dev.exitCode !== null) throw new Error("wrangler dev exited early")
      if (Date.now() - started > READY_TIMEOUT_MS)
        throw new Error("wrangler dev did not answer in time")
      const ready = await healthz().then(
        () => true,
        () => false,
      )
      if (ready) break
      await sleep(250)
    }
    say(`wrangler dev (pid ${dev.pid}) ready on ${base}`)
    expectEqual("/healthz before any pass", await healthz(), {
      status: 503,
      body: { lastPass: null },
    })

    /** One cron event, awaited through /healthz's record of its pass. */
    const cronEvent = async () => {
      const before = (await healthz()).body.lastPass?.finishedAt
      const response = await fetch(
        `${base}/__scheduled?cron=${encodeURIComponent(CRON)}`,
      )
      if (!response.ok)
        throw new Error(`/__scheduled answered ${response.status}`)
      const deadline = Date.now() + PASS_TIMEOUT_MS
      for (;;) {
        const now = await healthz()
        if (now.body.lastPass && now.body.lastPass.finishedAt !== before)
          return now
        if (Date.now() > deadline) throw new Error("no pass recorded in time")
        await sleep(100)
      }
    }

    const seen = new Map<string, number>()
    for (const id of Object.values(demoMachines))
      seen.set(id, fly.history(id).length)
    /** Monitored Fly events since the last call: what Discord must get. */
    const newFlyEvents = () =>
      Object.values(demoMachines).flatMap((id) => {
        const history = fly.history(id)
        const fresh = history.slice(0, history.length - (seen.get(id) ?? 0))
        seen.set(id, history.length)
        return fresh
          .filter((event) => MONITORED.has(event.type))
          .map((event) => `event ${event.id}`)
      })
    let read = 0
    const newMessages = (): Array<DiscordMessage> => {
      const fresh = discord.messages.slice(read)
      read = discord.messages.length
      return fresh
    }
    /** Each embed's footer, a run's start time left out of cost notices. */
    const footers = (messages: Array<DiscordMessage>) =>
      messages
        .flatMap((m) => m.embeds ?? [])
        .map((embed) =>
          String(embed.footer?.text).replace(/^(runaway \S+) \d+ /, "$1 "),
        )
        .sort()

    // The core's cost guards: the demo's two machines started days ago run
    // past MAX_RUNTIME (4 h); the forgotten one is stopped in the last tick.
    const { shopWebAms, sandbox } = demoMachines
    const notices = new Map<number, Array<string>>([
      [0, [`runaway ${shopWebAms} #0`, `runaway ${sandbox} #0`]],
      [demoTicks.length, [`runaway ${sandbox} resolved`]],
    ])

    const baseline = await cronEvent()
    expectEqual("baseline: pass ok", baseline.status, 200)
    const greeting = newMessages()
    expectEqual(
      "baseline: a greeting, no history, runaway notices",
      [
        greeting.filter((m) => m.content?.startsWith("Now watching org"))
          .length,
        footers(greeting),
      ],
      [1, notices.get(0)],
    )

    for (const [i, tick] of demoTicks.entries()) {
      tick.apply(fly)
      const expected = [...newFlyEvents(), ...(notices.get(i + 1) ?? [])]
      const pass = await cronEvent()
      expectEqual(`tick ${i + 1} (${tick.label}): pass ok`, pass.status, 200)
      expectEqual(
        `tick ${i + 1}: alerts for exactly the new events`,
        footers(newMessages()),
        expected.sort(),
      )
    }
    expectEqual(
      "every message well-formed for Discord",
      discord.requests.filter((r) => r.status !== 200).length,
      0,
    )
  } catch (error) {
    writeFileSync(logPath, log.join(""))
    say(`wrangler output kept in ${logPath}:`)
    process.stdout.write(log.join("").split("\n").slice(-40).join("\n") + "\n")
    throw error
  } finally {
    await stopDev()
    await control.stop()
  }
  say(`wrangler dev (pid ${dev.pid}) stopped`)
}

const startedAt = Date.now()
main().then(
  () => {
    rmSync(work, { recursive: true, force: true })
    say(`passed in ${((Date.now() - startedAt) / 1000).toFixed(1)} s`)
    process.exit(0)
  },
  (error) => {
    say(
      error instanceof Mismatch ? `MISMATCH: ${error.message}` : String(error),
    )
    process.exit(1)
  },
)
