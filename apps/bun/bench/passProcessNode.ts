import { FetchHttpClient } from "@effect/platform"
import * as SqlClient from "@effect/sql/SqlClient"
import { D1Client } from "@effect/sql-d1"
import { EventStore } from "@flymon/core/EventStore"
import { FlyEvents } from "@flymon/core/FlyEvents"
import { splitStatements } from "@flymon/core/Migrations"
import { runPass } from "@flymon/core/Monitor"
import { Notifier } from "@flymon/core/Notifier"
import { RetryPolicy, type RetryPolicyShape } from "@flymon/core/RetryPolicy"
import {
  Duration,
  Effect,
  Layer,
  Logger,
  LogLevel,
  ManagedRuntime,
  Schedule,
} from "effect"
import { readdirSync, readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { join } from "node:path"
import { createInterface } from "node:readline"

// The Worker path's estimate: the same core pass under Node (V8, like
// workerd) on a local D1 that Miniflare runs in workerd. Node's CPU time
// then holds the core and the D1 client, not the database, as a Worker's
// CPU time would. Bundled by run.ts with `bun build --target=node`; the
// protocol is passProcess.ts's ("pass" / "exit" on stdin, JSON lines out).

const quickRetry: RetryPolicyShape = {
  fly: Schedule.spaced("5 millis").pipe(Schedule.intersect(Schedule.recurs(2))),
  discord: Schedule.spaced("5 millis").pipe(
    Schedule.intersect(Schedule.recurs(2)),
  ),
  longestRateLimitWait: Duration.seconds(1),
  requestTimeout: Duration.seconds(60),
}

type D1Database = Parameters<typeof D1Client.layer>[0]["db"]

interface MiniflareLike {
  getD1Database(binding: string): Promise<D1Database>
  dispose(): Promise<void>
}

const env = (name: string) => {
  const value = process.env[name]
  if (value === undefined) throw new Error(`${name} is not set`)
  return value
}

const { Miniflare } = createRequire(env("BENCH_WRANGLER_PACKAGE"))(
  "miniflare",
) as { Miniflare: new (options: object) => MiniflareLike }
const miniflare = new Miniflare({
  modules: true,
  script: "export default {}",
  d1Databases: ["DB"],
})
// CPU time from a D1 call until its promise settles: the proxy to workerd
// (serialising, HTTP), which a Worker's native binding does not pay. The
// pass makes its queries one at a time, so little else runs meanwhile.
let sqlCpuMs = 0
const timed = async <A>(call: () => Promise<A>): Promise<A> => {
  const before = process.cpuUsage()
  try {
    return await call()
  } finally {
    const used = process.cpuUsage(before)
    sqlCpuMs += (used.user + used.system) / 1000
  }
}
const ASYNC = new Set(["all", "run", "first", "raw", "batch", "exec"])
const wrap = <T extends object>(target: T): T =>
  new Proxy(target, {
    get(object, property) {
      const value = Reflect.get(object, property) as unknown
      if (typeof value !== "function") return value
      const method = value as (...args: Array<unknown>) => unknown
      if (property === "prepare" || property === "bind")
        return (...args: Array<unknown>) =>
          wrap(method.apply(object, args) as object)
      if (typeof property === "string" && ASYNC.has(property))
        return (...args: Array<unknown>) =>
          timed(() => method.apply(object, args) as Promise<unknown>)
      return method.bind(object)
    },
  })
const db = wrap(await miniflare.getD1Database("DB"))
const migrations = env("BENCH_MIGRATIONS_DIR")
for (const file of readdirSync(migrations).sort())
  if (file.endsWith(".sql"))
    for (const statement of splitStatements(
      readFileSync(join(migrations, file), "utf8"),
    ))
      await db.prepare(statement).run()

const runtime = ManagedRuntime.make(
  Layer.mergeAll(FlyEvents.Default, EventStore.Default, Notifier.Default).pipe(
    Layer.provideMerge(
      Layer.mergeAll(
        FetchHttpClient.layer,
        RetryPolicy.layer(quickRetry),
        D1Client.layer({ db }),
      ),
    ),
    Layer.provide(Logger.minimumLogLevel(LogLevel.None)),
  ),
)

const eventRows = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  sql<{ n: number }>`SELECT count(*) AS n FROM events`.pipe(
    Effect.map((rows) => rows[0]!.n),
  ),
)

const measure = Effect.gen(function* () {
  const cpu = process.cpuUsage()
  const sqlBefore = sqlCpuMs
  const started = performance.now()
  const summary = yield* runPass
  const wallMs = performance.now() - started
  const used = process.cpuUsage(cpu)
  return {
    summary,
    wallMs,
    cpuMs: (used.user + used.system) / 1000,
    // D1 runs in another process: its per-connection counters are not ours.
    rowsWritten: null,
    eventRows: yield* eventRows,
    peakRssMb: process.resourceUsage().maxRSS / 1024,
    sqlCpuMs: sqlCpuMs - sqlBefore,
  }
})

const reply = (value: unknown) =>
  new Promise<void>((resolve) =>
    process.stdout.write(JSON.stringify(value) + "\n", () => resolve()),
  )

for await (const line of createInterface({ input: process.stdin })) {
  if (line === "pass") {
    const result = await runtime.runPromiseExit(measure)
    await reply(
      result._tag === "Success"
        ? { ok: true, value: result.value }
        : { ok: false, error: String(result.cause) },
    )
  } else if (line === "exit") {
    await runtime.dispose()
    await miniflare.dispose()
    await reply({
      ok: true,
      value: { maxRssMb: process.resourceUsage().maxRSS / 1024 },
    })
    process.exit(0)
  }
}
