import { APP_CONCURRENCY } from "@flymon/core/Monitor"
import { FakeDiscord } from "@flymon/testkit/FakeDiscord"
import { FakeFly } from "@flymon/testkit/FakeFly"
import { spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import type { ExitMeasurement, PassMeasurement } from "./passProcess.ts"

// `pnpm bench`: the real core pass against the fake Fly API (50 ms per
// answer) and the fake Discord, for three org sizes. The pass runs in a
// child process (passProcess.ts) so its CPU time and RSS are its own.
//
//   bun run apps/bun/bench/run.ts [--quick] [--memory]
//
// --quick   only the personal org (10 apps / 30 machines)
// --memory  SQLite in memory instead of a file in a temp folder

const LATENCY_MS = 50
const TOKEN = "FlyV1 fm2_bench-token"
const ORG = "bench-org"
const HOUR = 3_600_000

interface OrgSpec {
  readonly label: string
  readonly apps: number
  readonly machines: number
  /** Idle and busy passes measured; the median is reported. */
  readonly reps: number
}

const ORGS: ReadonlyArray<OrgSpec> = [
  { label: "personal", apps: 10, machines: 30, reps: 7 },
  { label: "team", apps: 100, machines: 1_000, reps: 3 },
  { label: "large", apps: 1_000, machines: 10_000, reps: 2 },
]

const args = new Set(process.argv.slice(2))
const orgs = args.has("--quick") ? ORGS.slice(0, 1) : ORGS

/** Deterministic, so every run builds the same org. */
const mulberry32 = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

const REGIONS = ["ams", "iad", "cdg", "sjc", "nrt", "syd"]

/**
 * `apps` apps sharing `machines` machines round-robin, each machine with
 * 2–4 back-dated events: launch and start, then for a third a requested
 * stop, for another third an update and a restart.
 */
const seedOrg = (fly: FakeFly, spec: OrgSpec): ReadonlyArray<string> => {
  const random = mulberry32(spec.apps * 7919 + spec.machines)
  const now = fly.now()
  const apps = Array.from(
    { length: spec.apps },
    (_, i) => `app-${String(i).padStart(4, "0")}`,
  )
  for (const app of apps) fly.addApp(app)
  const ids: Array<string> = []
  for (let i = 0; i < spec.machines; i++) {
    const id = `m${i.toString(16).padStart(13, "0")}`
    const app = apps[i % apps.length]!
    fly.addMachine(app, {
      id,
      name: `machine-${i}`,
      region: REGIONS[Math.floor(random() * REGIONS.length)]!,
      guest: { cpu_kind: "shared", cpus: 1 + (i % 2), memory_mb: 256 },
    })
    const born = now - 3 * 24 * HOUR + Math.floor(random() * HOUR)
    fly.emit(id, { type: "launch", status: "created", timestamp: born })
    fly.emit(id, {
      type: "start",
      status: "started",
      request: {},
      timestamp: born + 2_000,
    })
    if (i % 3 === 1) {
      fly.exit(id, { requestedStop: true, timestamp: born + HOUR })
    } else if (i % 3 === 2) {
      fly.emit(id, {
        type: "update",
        status: "replacing",
        timestamp: born + HOUR,
      })
      fly.emit(id, {
        type: "start",
        status: "started",
        request: {},
        timestamp: born + HOUR + 5_000,
      })
    }
    ids.push(id)
  }
  return ids
}

type Kind = "baseline" | "idle" | "busy" | "crash loop"

/** 10 % of the machines get one start (if stopped) or exit (if started). */
const busyTick = (fly: FakeFly, ids: ReadonlyArray<string>, tick: number) => {
  let events = 0
  for (let i = tick % 10; i < ids.length; i += 10) {
    const id = ids[i]!
    if (fly.stateOf(id) === "started") fly.exit(id, { exitCode: i % 2 })
    else fly.start(id)
    events++
  }
  return events
}

/**
 * 1 % of the machines (at least one) crash three times since the last
 * pass: six new events, more than the five Fly embeds, so each needs its
 * full event list.
 */
const crashLoopTick = (fly: FakeFly, ids: ReadonlyArray<string>) => {
  const step = Math.min(100, ids.length)
  let events = 0
  for (let i = 0; i < ids.length; i += step) {
    const id = ids[i]!
    if (fly.stateOf(id) !== "started") {
      fly.start(id)
      events++
    }
    for (let n = 0; n < 3; n++) {
      fly.exit(id, { exitCode: 1, restarting: true, restartCount: n })
      fly.start(id)
      events += 2
    }
  }
  return events
}

interface Row {
  readonly org: OrgSpec
  readonly kind: Kind
  readonly newFlyEvents: number
  readonly flyRequests: number
  readonly eventLists: number
  readonly discordPosts: number
  readonly pass: PassMeasurement
}

const startPassProcess = (env: Record<string, string>) => {
  const child = spawn(
    process.execPath,
    ["run", fileURLToPath(new URL("./passProcess.ts", import.meta.url))],
    {
      env: { PATH: process.env.PATH ?? "", ...env },
      stdio: ["pipe", "pipe", "inherit"],
    },
  )
  const answers = createInterface({ input: child.stdout! })[
    Symbol.asyncIterator
  ]()
  const ask = async <A>(command: string): Promise<A> => {
    child.stdin!.write(command + "\n")
    const next = await answers.next()
    if (next.done) throw new Error("the pass process ended early")
    const answer = JSON.parse(next.value) as
      | { ok: true; value: A }
      | { ok: false; error: string }
    if (!answer.ok) throw new Error(`pass failed: ${answer.error}`)
    return answer.value
  }
  return { ask }
}

const benchOrg = async (spec: OrgSpec) => {
  const fly = await FakeFly.start({ token: TOKEN, org: ORG })
  const discord = await FakeDiscord.start()
  const dir = mkdtempSync(join(tmpdir(), "flymon-bench-"))
  try {
    const ids = seedOrg(fly, spec)
    fly.latencyMs = LATENCY_MS
    const monitor = startPassProcess({
      FLY_API_TOKEN: TOKEN,
      FLY_ORG_SLUG: ORG,
      FLY_API_BASE_URL: fly.url,
      DISCORD_WEBHOOK_URL: discord.webhookUrl(),
      BENCH_DATABASE_PATH: args.has("--memory")
        ? ":memory:"
        : join(dir, "monitor.db"),
    })
    const rows: Array<Row> = []
    const measure = async (kind: Kind, newFlyEvents: number) => {
      const flyBefore = fly.requests.length
      const discordBefore = discord.requests.length
      const pass = await monitor.ask<PassMeasurement>("pass")
      const sent = fly.requests.slice(flyBefore)
      rows.push({
        org: spec,
        kind,
        newFlyEvents,
        flyRequests: sent.length,
        eventLists: sent.filter((r) => r.path.endsWith("/events")).length,
        discordPosts: discord.requests.length - discordBefore,
        pass,
      })
      process.stderr.write(
        `${spec.label} ${kind}: ${pass.wallMs.toFixed(0)} ms\n`,
      )
    }
    await measure("baseline", 0)
    for (let rep = 0; rep < spec.reps; rep++) await measure("idle", 0)
    for (let rep = 0; rep < spec.reps; rep++)
      await measure("busy", busyTick(fly, ids, rep))
    for (let rep = 0; rep < spec.reps; rep++)
      await measure("crash loop", crashLoopTick(fly, ids))
    const exit = await monitor.ask<ExitMeasurement>("exit")
    return { rows, maxRssMb: exit.maxRssMb }
  } finally {
    await Promise.all([fly.stop(), discord.stop()])
    rmSync(dir, { recursive: true, force: true })
  }
}

const median = (values: ReadonlyArray<number>) => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1
    ? sorted[mid]!
    : (sorted[mid - 1]! + sorted[mid]!) / 2
}

const fixed = (value: number, digits = 0) => value.toFixed(digits)

/** Two round trips: the app list, then every machine list at once. */
const twoTripBound = () => 2 * LATENCY_MS
/** The app list, then machine lists APP_CONCURRENCY at a time. */
const waveBound = (apps: number) =>
  (1 + Math.ceil(apps / APP_CONCURRENCY)) * LATENCY_MS

interface Line {
  readonly org: OrgSpec
  readonly kind: Kind
  readonly reps: number
  readonly wallMs: number
  readonly wallRange: string
  readonly cpuMs: number
  readonly newFlyEvents: number
  readonly newEvents: number
  readonly alertsSent: number
  readonly flyRequests: number
  readonly eventLists: number
  readonly discordPosts: number
  readonly rowsWritten: number
  readonly peakRssMb: number
}

const summarise = (rows: ReadonlyArray<Row>): Line => {
  const first = rows[0]!
  const walls = rows.map((r) => r.pass.wallMs)
  return {
    org: first.org,
    kind: first.kind,
    reps: rows.length,
    wallMs: median(walls),
    wallRange: `${fixed(Math.min(...walls))}–${fixed(Math.max(...walls))}`,
    cpuMs: median(rows.map((r) => r.pass.cpuMs)),
    newFlyEvents: median(rows.map((r) => r.newFlyEvents)),
    newEvents: median(rows.map((r) => r.pass.summary.newEvents)),
    alertsSent: median(rows.map((r) => r.pass.summary.alertsSent)),
    flyRequests: median(rows.map((r) => r.flyRequests)),
    eventLists: median(rows.map((r) => r.eventLists)),
    discordPosts: median(rows.map((r) => r.discordPosts)),
    rowsWritten: median(rows.map((r) => r.pass.rowsWritten)),
    peakRssMb: Math.max(...rows.map((r) => r.pass.peakRssMb)),
  }
}

const table = (lines: ReadonlyArray<Line>) => {
  const head = [
    "org (apps / machines)",
    "pass",
    "n",
    "wall ms (range)",
    "2-RTT bound",
    "ratio",
    "8-wide bound",
    "ratio",
    "Fly req",
    "of which /events",
    "Discord posts",
    "new events → alerts",
    "rows written",
    "CPU ms",
    "peak RSS MB",
  ]
  const body = lines.map((l) => {
    const wave = waveBound(l.org.apps)
    return [
      `${l.org.label} (${l.org.apps} / ${l.org.machines})`,
      l.kind,
      String(l.reps),
      `${fixed(l.wallMs)} (${l.wallRange})`,
      String(twoTripBound()),
      fixed(l.wallMs / twoTripBound(), 2),
      String(wave),
      fixed(l.wallMs / wave, 2),
      String(l.flyRequests),
      String(l.eventLists),
      String(l.discordPosts),
      `${l.newEvents} → ${l.alertsSent}`,
      String(l.rowsWritten),
      fixed(l.cpuMs, 1),
      fixed(l.peakRssMb),
    ]
  })
  return [head, head.map(() => "---"), ...body]
    .map((cells) => `| ${cells.join(" | ")} |`)
    .join("\n")
}

const verdict = (met: boolean) => (met ? "met" : "MISSED")

const started = performance.now()
const lines: Array<Line> = []
const maxRss: Array<string> = []
for (const spec of orgs) {
  const { rows, maxRssMb } = await benchOrg(spec)
  for (const kind of ["baseline", "idle", "busy", "crash loop"] as const)
    lines.push(summarise(rows.filter((r) => r.kind === kind)))
  maxRss.push(
    `| ${spec.label} (${spec.apps} / ${spec.machines}) | ${fixed(maxRssMb)} |`,
  )
}

const out: Array<string> = []
out.push(
  `Fly answers after ${LATENCY_MS} ms; the pass lists ${APP_CONCURRENCY} apps at once. ` +
    `Medians over n passes; rows written = SQLite total_changes().`,
  "",
  table(lines),
  "",
  "| org | max RSS of the pass process, MB |",
  "| --- | --- |",
  ...maxRss,
  "",
)

const find = (label: string, kind: Kind) =>
  lines.find((l) => l.org.label === label && l.kind === kind)
const personal = ["idle", "busy", "crash loop"].map((kind) =>
  find("personal", kind as Kind),
)
out.push("Worker path (personal org, per pass):", "")
for (const line of personal) {
  if (line === undefined) continue
  const subrequests = line.flyRequests + line.discordPosts
  out.push(
    `- ${line.kind}: ${line.flyRequests} Fly + ${line.discordPosts} Discord = ` +
      `${subrequests} subrequests (< 50: ${verdict(subrequests < 50)}); ` +
      `CPU ${fixed(line.cpuMs, 1)} ms under Bun (< 10 ms: ${verdict(line.cpuMs < 10)})`,
  )
}
out.push("", "Targets:", "")
const team = ["idle", "busy"].map((kind) => find("team", kind as Kind))
for (const line of team) {
  if (line === undefined) continue
  const vsWave = line.wallMs / waveBound(line.org.apps)
  const vsTwo = line.wallMs / twoTripBound()
  out.push(
    `- ratio ≤ 1.3 at 100 apps, ${line.kind}: ${fixed(vsWave, 2)} against the ` +
      `${APP_CONCURRENCY}-wide bound (${verdict(vsWave <= 1.3)}), ` +
      `${fixed(vsTwo, 2)} against 2 round trips (${verdict(vsTwo <= 1.3)})`,
  )
}
const idle = lines.filter((l) => l.kind === "idle")
out.push(
  `- idle pass writes 0 rows and posts nothing: ${verdict(
    idle.every((l) => l.rowsWritten === 0 && l.discordPosts === 0),
  )} (${idle.map((l) => `${l.org.label}: ${l.rowsWritten} rows, ${l.discordPosts} posts`).join("; ")})`,
)
const busy = lines.filter((l) => l.kind === "busy" && l.newEvents > 0)
out.push(
  `- rows written per new event (busy passes): ${busy
    .map(
      (l) =>
        `${l.org.label} ${fixed(l.rowsWritten / l.newEvents, 2)} (${l.rowsWritten} / ${l.newEvents})`,
    )
    .join("; ")}`,
)
const lost = lines.filter(
  (l) => l.kind !== "baseline" && l.newEvents !== l.newFlyEvents,
)
out.push(
  `- every new Fly event alerted: ${verdict(lost.length === 0)}` +
    (lost.length === 0
      ? ""
      : ` (${lost.map((l) => `${l.org.label} ${l.kind}: ${l.newEvents} of ${l.newFlyEvents}`).join("; ")})`),
  "",
  `Total ${fixed((performance.now() - started) / 1000, 1)} s.`,
)
console.log(out.join("\n"))
