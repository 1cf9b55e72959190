// Soak run: the real Bun monitor against the fake Fly API and fake Discord
// for an hour of simulated polling (720 passes, as at a 5 s interval),
// compressed by polling every 50 ms. Prints database size, the monitor's
// resident memory and the alerts delivered. Not a test: run it by hand with
// `pnpm --filter @flymon/bun soak`.
import { FakeDiscord } from "@flymon/testkit/FakeDiscord"
import { FakeFly } from "@flymon/testkit/FakeFly"
import { spawn } from "node:child_process"
import {
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
} from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"

const PASSES = Number(process.env.SOAK_PASSES ?? 720)
const APPS = 20
const MACHINES_PER_APP = 5
const CHANGES_PER_TICK = 3
const INTERVAL_MS = 50

const main = fileURLToPath(new URL("../src/main.ts", import.meta.url))
const dir = mkdtempSync(join(tmpdir(), "flymon-soak-"))
const database = join(dir, "soak.db")
const token = "fm2_soak-token"

const fly = await FakeFly.start({ token, org: "soak" })
const discord = await FakeDiscord.start()
const machines: Array<string> = []
for (let a = 0; a < APPS; a++) {
  fly.addApp(`app-${String(a).padStart(2, "0")}`)
  for (let m = 0; m < MACHINES_PER_APP; m++) {
    const id = `${a.toString(16).padStart(2, "0")}${m}00000000000`
    fly.addMachine(`app-${String(a).padStart(2, "0")}`, {
      id,
      name: `machine-${a}-${m}`,
      region: "iad",
    })
    machines.push(id)
  }
}

const child = spawn(process.execPath, ["run", main], {
  cwd: dir,
  env: {
    PATH: process.env.PATH ?? "",
    FLY_API_TOKEN: token,
    FLY_ORG_SLUG: "soak",
    FLY_API_BASE_URL: fly.url,
    DISCORD_WEBHOOK_URL: discord.webhookUrl(),
    DATABASE_PATH: database,
    POLL_INTERVAL: `${INTERVAL_MS}ms`,
    LOG_LEVEL: "Warn",
    DIGEST_HOUR: "off",
  },
  stdio: ["ignore", "ignore", "inherit"],
})

const rssKb = () => {
  const status = readFileSync(`/proc/${child.pid}/status`, "utf8")
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0)
}
const databaseBytes = () =>
  ["", "-wal", "-shm"]
    .map((suffix) => database + suffix)
    .filter((file) => existsSync(file))
    .reduce((sum, file) => sum + statSync(file).size, 0)
const appsRequests = () =>
  fly.requests.filter((r) => r.path === "/v1/apps").length

let seed = 42
const random = () => {
  seed = (seed * 1103515245 + 12345) % 2 ** 31
  return seed / 2 ** 31
}

const started = Date.now()
const samples: Array<{ pass: number; rss: number; db: number }> = []
let changes = 0
let peakRss = 0
let seen = 0
const embeds = () =>
  discord.messages.reduce((n, m) => n + (m.embeds?.length ?? 0), 0)
while (seen < PASSES) {
  const pass = appsRequests()
  peakRss = Math.max(peakRss, rssKb())
  if (pass > seen) {
    // One tick of the simulated org per pass the monitor starts, from the
    // second on: what changes during the first pass is its baseline.
    for (let i = 0; i < (pass > 1 ? CHANGES_PER_TICK : 0); i++) {
      const id = machines[Math.floor(random() * machines.length)]!
      if (fly.stateOf(id) === "started") fly.exit(id, { exitCode: i % 2 })
      else fly.start(id)
      changes++
    }
    if (Math.floor(pass / 120) > Math.floor(seen / 120) || seen === 0)
      samples.push({ pass, rss: rssKb(), db: databaseBytes() })
    seen = pass
  }
  await new Promise((resolve) => setTimeout(resolve, 5))
}
// Let the last alerts go out.
for (let waited = 0; embeds() < changes && waited < 30_000; waited += 100)
  await new Promise((resolve) => setTimeout(resolve, 100))
child.kill("SIGTERM")
await new Promise((resolve) => child.on("close", resolve))

const mb = (bytes: number) => (bytes / 1024 / 1024).toFixed(2)
console.log(
  `soak: ${PASSES} passes over ${APPS} apps / ${APPS * MACHINES_PER_APP} machines in ${((Date.now() - started) / 1000).toFixed(1)} s`,
)
console.log("")
console.log("| pass | RSS (MB) | database (MB) |")
console.log("| ---: | ---: | ---: |")
for (const s of samples)
  console.log(`| ${s.pass} | ${(s.rss / 1024).toFixed(1)} | ${mb(s.db)} |`)
console.log("")
console.log(`machine changes made: ${changes} (each a start or an exit event)`)
console.log(
  `alerts delivered: ${embeds()} in ${discord.messages.length} Discord messages`,
)
console.log(
  `peak RSS: ${(peakRss / 1024).toFixed(1)} MB; final database: ${mb(databaseBytes())} MB`,
)
const kinds = new Map<string, number>()
for (const r of fly.requests) {
  const kind = r.path.endsWith("/events")
    ? "events"
    : r.path === "/v1/apps"
      ? "apps"
      : "machines"
  kinds.set(`${kind} ${r.status}`, (kinds.get(`${kind} ${r.status}`) ?? 0) + 1)
}
console.log(`Fly requests: ${fly.requests.length}`, Object.fromEntries(kinds))
await Promise.all([fly.stop(), discord.stop()])
rmSync(dir, { recursive: true, force: true })
