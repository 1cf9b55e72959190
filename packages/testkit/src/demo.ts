import { spawn } from "node:child_process"
import { existsSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { FakeDiscord, type DiscordMessage } from "./FakeDiscord.ts"
import { FakeFly } from "./FakeFly.ts"
import { createDemoOrg, demoOrg, demoTicks } from "./scenario.ts"

const TOKEN = "fm2_demo-token"
const FIRST_MESSAGE_TIMEOUT_MS = 20_000
const TICK_MS = 4_000
const SETTLE_MS = 6_000
const mainPath = fileURLToPath(
  new URL("../../../apps/bun/src/main.ts", import.meta.url),
)

const color = process.stdout.isTTY === true
const say = (line: string) => process.stdout.write(`${line}\n`)
const sleep = (ms: number) =>
  new Promise<"slept">((resolve) => setTimeout(() => resolve("slept"), ms))

const swatch = (rgb: unknown) => {
  if (!color || typeof rgb !== "number") return "▌"
  const [r, g, b] = [(rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255]
  return `\x1b[38;2;${r};${g};${b}m▌\x1b[0m`
}

const indent = (text: unknown, prefix: string) =>
  String(text)
    .split("\n")
    .map((line) => prefix + line)
    .join("\n")

// Discord renders escapes and timestamp tags; a terminal shows them as is.
const plain = (text: unknown) =>
  String(text)
    .replace(/<t:(\d+):f> \(<t:\d+:R>\)/g, (_, s) =>
      new Date(Number(s) * 1000).toISOString().replace("T", " ").slice(0, 19),
    )
    .replace(/\\(.)/g, "$1")
    .replace(/\u200b/g, "")

const render = (m: DiscordMessage): string => {
  const time = new Date().toISOString().slice(11, 19)
  const lines = [`[${time}] ${m.username ?? "(webhook)"}`]
  if (m.content) lines.push(indent(plain(m.content), "  "))
  for (const embed of m.embeds ?? []) {
    const bar = swatch(embed?.color)
    if (embed?.title) lines.push(`  ${bar} ${plain(embed.title)}`)
    if (embed?.description) lines.push(indent(embed.description, `  ${bar}   `))
    for (const field of embed?.fields ?? []) {
      lines.push(
        indent(`${field?.name}: ${plain(field?.value)}`, `  ${bar}   `),
      )
    }
    if (embed?.footer?.text) lines.push(`  ${bar}   — ${embed.footer.text}`)
  }
  return lines.join("\n")
}

const main = async (): Promise<number> => {
  if (typeof process.versions.bun !== "string") {
    say("demo: run with Bun (pnpm demo), it spawns the Bun monitor")
    return 1
  }
  if (!existsSync(mainPath)) {
    say(`demo: the monitor is missing at ${mainPath}`)
    return 1
  }

  let embeds = 0
  let gotFirst: () => void = () => {}
  const firstMessage = new Promise<"message">((resolve) => {
    gotFirst = () => resolve("message")
  })
  const discord = await FakeDiscord.start({
    onMessage: (m) => {
      embeds += m.embeds?.length ?? 0
      say(render(m))
      gotFirst()
    },
  })
  const fly = await FakeFly.start({ token: TOKEN, org: demoOrg })
  createDemoOrg(fly)
  const dir = mkdtempSync(join(tmpdir(), "flymon-demo-"))
  say(`── fake Fly API at ${fly.url}, fake Discord at ${discord.url}`)

  const monitor = spawn(process.execPath, ["run", mainPath], {
    env: {
      ...process.env,
      FLY_API_TOKEN: TOKEN,
      FLY_ORG_SLUG: demoOrg,
      FLY_API_BASE_URL: fly.url,
      DISCORD_WEBHOOK_URL: discord.webhookUrl(),
      DATABASE_PATH: join(dir, "demo.db"),
      POLL_INTERVAL: "2s",
      LOG_LEVEL: "Info",
    },
    stdio: ["ignore", "inherit", "inherit"],
  })
  const exited = new Promise<"exited">((resolve) =>
    monitor.once("exit", (code, signal) => {
      say(`── monitor exited (${signal ?? `code ${code}`})`)
      resolve("exited")
    }),
  )
  let running = true
  void exited.then(() => (running = false))
  const shutdown = async () => {
    if (running) {
      monitor.kill("SIGTERM")
      if ((await Promise.race([exited, sleep(5_000)])) === "slept") {
        monitor.kill("SIGKILL")
        await exited
      }
    }
    await Promise.all([fly.stop(), discord.stop()])
    rmSync(dir, { recursive: true, force: true })
  }
  process.once("SIGINT", () => {
    void shutdown().then(() => process.exit(130))
  })

  const first = await Promise.race([
    firstMessage,
    exited,
    sleep(FIRST_MESSAGE_TIMEOUT_MS),
  ])
  if (first === "message") {
    for (const [i, tick] of demoTicks.entries()) {
      if ((await Promise.race([sleep(TICK_MS), exited])) === "exited") break
      say(`── tick ${i + 1}: ${tick.label}`)
      tick.apply(fly)
    }
    if (running) await Promise.race([sleep(SETTLE_MS), exited])
  } else if (first === "slept") {
    say(`── no Discord message within ${FIRST_MESSAGE_TIMEOUT_MS / 1000} s`)
  }

  await shutdown()
  const count = discord.messages.length
  say(`── demo done: ${count} messages, ${embeds} embeds received`)
  return count > 0 ? 0 : 1
}

main().then(
  (code) => process.exit(code),
  (error) => {
    say(`demo failed: ${error instanceof Error ? error.stack : String(error)}`)
    process.exit(1)
  },
)
