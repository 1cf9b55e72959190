import { APP_CONCURRENCY } from "@flymon/core/Monitor"
import { FakeDiscord } from "@flymon/testkit/FakeDiscord"
import { FakeFly } from "@flymon/testkit/FakeFly"
import { spawn } from "node:child_process"
import { spawnSync } from "node:child_process"
import { mkdtempSync, realpathSync, rmSync, symlinkSync } from "node:fs"
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
// --org=L   only the org labelled L (personal, team, large)
// --memory  SQLite in memory instead of a file in a temp folder
// --no-node skip the personal org under Node + D1
// --reps=N  passes of each kind per org (default 7 / 3 / 2)
// --sql-cpu time every SQL statement (Bun; costs CPU of its own)
// --profile=DIR  write a CPU profile (markdown) of each Bun pass process

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
const repsArg = process.argv.find((arg) => arg.startsWith("--reps="))
const profileDir = process.argv
  .find((arg) => arg.startsWith("--profile="))
  ?.slice("--profile=".length)
const only = process.argv
  .find((arg) => arg.startsWith("--org="))
  ?.slice("--org=".length)
const selected = args.has("--quick")
  ? ORGS.slice(0, 1)
  : ORGS.filter((spec) => only === undefined || spec.label === only)
const orgs = selected.map((spec) =>
  repsArg === undefined ? spec : { ...spec, reps: Number(repsArg.slice(7)) },
)

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

type Runtime = "bun" | "node"

/** The Node pass process, bundled once, beside a link to the D1 packages. */
const nodeBundle = (): {
  readonly file: string
  readonly env: Record<string, string>
} => {
  const dir = mkdtempSync(join(tmpdir(), "flymon-bench-node-"))
  process.on("exit", () => rmSync(dir, { recursive: true, force: true }))
  const worker = fileURLToPath(new URL("../../worker/", import.meta.url))
  // The Worker's packages: effect, @effect/sql-d1, wrangler (Miniflare).
  symlinkSync(join(worker, "node_modules"), join(dir, "node_modules"))
  const file = join(dir, "pass.mjs")
  const built = spawnSync(
    process.execPath,
    [
      "build",
      fileURLToPath(new URL("./passProcessNode.ts", import.meta.url)),
      "--target=node",
      `--outfile=${file}`,
      "--external",
      "effect",
      "--external",
      "@effect/*",
    ],
    { stdio: ["ignore", "ignore", "inherit"] },
  )
  if (built.status !== 0) throw new Error("bun build of the Node pass failed")
  return {
    file,
    env: {
      BENCH_WRANGLER_PACKAGE: join(
        realpathSync(join(worker, "node_modules", "wrangler")),
        "package.json",
      ),
      BENCH_MIGRATIONS_DIR: fileURLToPath(
        new URL("../../../packages/core/migrations/", import.meta.url),
      ),
    },
  }
}

const startPassProcess = (runtime: Runtime, env: Record<string, string>) => {
  const [command, args, extra] =
    runtime === "bun"
      ? [
          process.execPath,
          [
            ...(profileDir === undefined
              ? []
              : ["--cpu-prof-md", `--cpu-prof-dir=${profileDir}`]),
            "run",
            fileURLToPath(new URL("./passProcess.ts", import.meta.url)),
          ],
          {},
        ]
      : (() => {
          const bundle = nodeBundle()
          return ["node", [bundle.file], bundle.env] as const
        })()
  const child = spawn(command, args, {
    env: { PATH: process.env.PATH ?? "", ...extra, ...env },
    stdio: ["pipe", "pipe", "inherit"],
  })
  const answers = createInterface({ input: child.stdout! })[
    Symbol.asyncIterator
  ]()
  const ask = async <A>(command: string): Promise<A> => {
    child.stdin!.write(command + "\n")
    const next = await answers.next()
    if (next.done) throw new Error("the pass process ended early")
    const answer = JSON.parse(next.value) as
      { ok: true; value: A } | { ok: false; error: string }
    if (!answer.ok) throw new Error(`pass failed: ${answer.error}`)
    return answer.value
  }
  return { ask }
}

const benchOrg = async (spec: OrgSpec, runtime: Runtime = "bun") => {
  const fly = await FakeFly.start({ token: TOKEN, org: ORG })
  const discord = await FakeDiscord.start()
  const dir = mkdtempSync(join(tmpdir(), "flymon-bench-"))
  try {
    const ids = seedOrg(fly, spec)
    fly.latencyMs = LATENCY_MS
    const monitor = startPassProcess(runtime, {
      FLY_API_TOKEN: TOKEN,
      FLY_ORG_SLUG: ORG,
      FLY_API_BASE_URL: fly.url,
      DISCORD_WEBHOOK_URL: discord.webhookUrl(),
      // The cost guards still run, but post nothing here: no machine
      // reaches its runtime limit and the daily digest is off, so an idle
      // pass has nothing to say.
      MAX_RUNTIME: "1000d",
      BENCH_SQL_CPU: args.has("--sql-cpu") ? "1" : "0",
      DIGEST_HOUR: "off",
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
        `${runtime} ${spec.label} ${kind}: ${pass.wallMs.toFixed(0)} ms\n`,
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
  readonly sqlCpuMs: number | null
  readonly newFlyEvents: number
  readonly newEvents: number
  readonly alertsSent: number
  readonly flyRequests: number
  readonly eventLists: number
  readonly discordPosts: number
  readonly rowsWritten: number | null
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
    sqlCpuMs: rows.some((r) => r.pass.sqlCpuMs === null)
      ? null
      : median(rows.map((r) => r.pass.sqlCpuMs!)),
    newFlyEvents: median(rows.map((r) => r.newFlyEvents)),
    newEvents: median(rows.map((r) => r.pass.summary.newEvents)),
    alertsSent: median(rows.map((r) => r.pass.summary.alertsSent)),
    flyRequests: median(rows.map((r) => r.flyRequests)),
    eventLists: median(rows.map((r) => r.eventLists)),
    discordPosts: median(rows.map((r) => r.discordPosts)),
    rowsWritten: rows.some((r) => r.pass.rowsWritten === null)
      ? null
      : median(rows.map((r) => r.pass.rowsWritten!)),
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
    "of which in SQL",
    "CPU ms outside SQL",
    "RSS high-water MB",
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
      l.rowsWritten === null ? "n/a" : String(l.rowsWritten),
      fixed(l.cpuMs, 1),
      l.sqlCpuMs === null ? "–" : fixed(l.sqlCpuMs, 1),
      l.sqlCpuMs === null ? "–" : fixed(l.cpuMs - l.sqlCpuMs, 1),
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

// The Worker path: the personal org's pass under Node on a Miniflare D1.
const nodeLines: Array<Line> = []
if (!args.has("--no-node")) {
  const { rows } = await benchOrg({ ...ORGS[0]!, reps: orgs[0]!.reps }, "node")
  for (const kind of ["baseline", "idle", "busy", "crash loop"] as const)
    nodeLines.push(summarise(rows.filter((r) => r.kind === kind)))
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
if (nodeLines.length > 0)
  out.push(
    "The same personal org under Node 20 on a local D1 (Miniflare); rows written are not visible from Node:",
    "",
    table(nodeLines),
    "",
  )
out.push("Worker path (personal org, per pass):", "")
for (const line of personal) {
  if (line === undefined) continue
  const subrequests = line.flyRequests + line.discordPosts
  const node = nodeLines.find((l) => l.kind === line.kind)
  const bunCore = line.cpuMs - (line.sqlCpuMs ?? 0)
  const nodeCore =
    node === undefined ? undefined : node.cpuMs - (node.sqlCpuMs ?? 0)
  out.push(
    `- ${line.kind}: ${line.flyRequests} Fly + ${line.discordPosts} Discord = ` +
      `${subrequests} subrequests (< 50: ${verdict(subrequests < 50)}); ` +
      `CPU ${fixed(bunCore, 1)} ms under Bun` +
      (line.sqlCpuMs === null ? " with SQLite" : " outside SQLite") +
      ` (< 10 ms: ${verdict(bunCore < 10)})` +
      (nodeCore === undefined
        ? ""
        : `; ${fixed(nodeCore, 1)} ms under Node outside D1 calls ` +
          `(< 10 ms: ${verdict(nodeCore < 10)}; ${fixed(node!.cpuMs, 1)} ms in all)`),
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
  `- rows written per new event, busy pass less idle pass: ${busy
    .map((l) => {
      const idleRows = find(l.org.label, "idle")?.rowsWritten ?? 0
      const extra = (l.rowsWritten ?? 0) - idleRows
      return `${l.org.label} ${fixed(extra / l.newEvents, 2)} ((${l.rowsWritten} − ${idleRows}) / ${l.newEvents})`
    })
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
