import { FetchHttpClient } from "@effect/platform"
import { footerKeys } from "@flymon/core/DiscordMessage"
import { EventStore } from "@flymon/core/EventStore"
import { FlyEvents } from "@flymon/core/FlyEvents"
import { runPass, type PassSummary } from "@flymon/core/Monitor"
import { Notifier } from "@flymon/core/Notifier"
import { RetryPolicy, type RetryPolicyShape } from "@flymon/core/RetryPolicy"
import { FakeDiscord } from "@flymon/testkit/FakeDiscord"
import { FakeFly, type FakeEvent } from "@flymon/testkit/FakeFly"
import {
  Cause,
  Clock,
  ConfigProvider,
  Duration,
  Effect,
  Exit,
  Layer,
  Logger,
  LogLevel,
  Schedule,
} from "effect"
import { Database } from "bun:sqlite"
import { mkdtempSync, rmSync } from "node:fs"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { assert } from "vitest"
import { layerDatabase } from "../../src/Database.ts"
import { runCli, startCli, type CliResult } from "../cli.ts"

// One rig per fault row: the fake Fly API and fake Discord on 127.0.0.1,
// one SQLite file, and every line either runner printed, so a row can
// assert what was announced, how often, and what the logs said.

/** Recognisable fake secrets: no log line or Discord message may hold one. */
export const SECRETS = {
  flyToken: "FlyV1 fm2_faultrow-secret-fly-macaroon",
  webhookId: "424242",
  webhookToken: "faultrow-secret-webhook-token",
} as const
/** The parts of the secrets that must never be printed or posted. */
export const SECRET_MARKERS = [
  "faultrow-secret-fly-macaroon",
  "faultrow-secret-webhook-token",
] as const

export const ORG = "fault-org"
const BILLING = new Set(["start", "stop", "exit"])

/** Fails fast, so in-process rows take milliseconds, not minutes. */
export const quickRetry: RetryPolicyShape = {
  fly: Schedule.spaced("10 millis").pipe(
    Schedule.intersect(Schedule.recurs(2)),
  ),
  discord: Schedule.spaced("10 millis").pipe(
    Schedule.intersect(Schedule.recurs(2)),
  ),
  longestRateLimitWait: Duration.seconds(1),
  requestTimeout: Duration.seconds(5),
}

/** Everything any rig printed or posted, for the secrets check. */
export const collected: Array<string> = []

/** The key the monitor gives an event (Domain.eventKey). */
export const keyOf = (machineId: string, event: FakeEvent) =>
  event.id ??
  `${machineId}:${event.timestamp}:${event.type}:${event.status}:${event.source}`

/** A clock `offsetMs` ahead of real time; sleeps stay real. */
export const clockAhead = (offsetMs: number): Clock.Clock => {
  const real = Clock.make()
  const millis = () => real.unsafeCurrentTimeMillis() + offsetMs
  const nanos = () =>
    real.unsafeCurrentTimeNanos() + BigInt(offsetMs) * 1_000_000n
  return {
    [Clock.ClockTypeId]: Clock.ClockTypeId,
    unsafeCurrentTimeMillis: millis,
    unsafeCurrentTimeNanos: nanos,
    currentTimeMillis: Effect.sync(millis),
    currentTimeNanos: Effect.sync(nanos),
    sleep: (duration) => real.sleep(duration),
  }
}

export interface InProcessOptions {
  readonly policy?: RetryPolicyShape
  readonly env?: Record<string, string>
  /** Runs the pass with its clock moved ahead. */
  readonly clockOffsetMs?: number
}

export class Rig {
  readonly dir = mkdtempSync(join(tmpdir(), "flymon-faults-"))
  readonly databasePath = join(this.dir, "monitor.db")
  /** Billing events created after the baseline, in emit order. */
  readonly expected: Array<string> = []
  readonly output: Array<string> = []

  private constructor(
    readonly fly: FakeFly,
    readonly discord: FakeDiscord,
  ) {}

  static async start(): Promise<Rig> {
    const fly = await FakeFly.start({ token: SECRETS.flyToken, org: ORG })
    const discord = await FakeDiscord.start()
    return new Rig(fly, discord)
  }

  async stop(): Promise<void> {
    // Request bodies, not paths: the path carries the webhook token by design.
    collected.push(
      ...this.output,
      ...this.discord.requests.map((r) => JSON.stringify(r.body)),
    )
    await Promise.all([this.fly.stop(), this.discord.stop()])
    rmSync(this.dir, { recursive: true, force: true })
  }

  get webhookUrl(): string {
    return this.discord.webhookUrl(SECRETS.webhookId, SECRETS.webhookToken)
  }

  env(extra: Record<string, string> = {}): Record<string, string> {
    return {
      FLY_API_TOKEN: SECRETS.flyToken,
      FLY_ORG_SLUG: ORG,
      FLY_API_BASE_URL: this.fly.url,
      DISCORD_WEBHOOK_URL: this.webhookUrl,
      DATABASE_PATH: this.databasePath,
      LOG_LEVEL: "Debug",
      // Rows count every billing event's own alert. A restart storm or the
      // per-app limit would fold events into one notice (tested in core).
      STORM_EVENTS: "off",
      APP_ALERT_LIMIT: "off",
      ...extra,
    }
  }

  /** `count` apps of `perApp` stopped machines, each launched and stopped. */
  seed(count = 2, perApp = 2): ReadonlyArray<string> {
    const ids: Array<string> = []
    const past = this.fly.now() - 60_000
    for (let a = 0; a < count; a++) {
      const app = `app-${a}`
      this.fly.addApp(app)
      for (let m = 0; m < perApp; m++) {
        const id = `${a}${m}0de5f00d${String(ids.length).padStart(4, "0")}`
        this.fly.addMachine(app, { id, name: `web-${a}-${m}`, region: "ams" })
        this.fly.emit(id, {
          type: "launch",
          status: "created",
          timestamp: past + ids.length * 10,
        })
        this.fly.exit(id, {
          requestedStop: true,
          timestamp: past + ids.length * 10 + 5,
        })
        ids.push(id)
      }
    }
    return ids
  }

  /** Records a billing event the monitor must announce exactly once. */
  track(machineId: string, event: FakeEvent): FakeEvent {
    if (BILLING.has(event.type)) this.expected.push(keyOf(machineId, event))
    return event
  }

  start(machineId: string) {
    return this.track(machineId, this.fly.start(machineId))
  }

  exit(machineId: string, exitCode = 1) {
    return this.track(machineId, this.fly.exit(machineId, { exitCode }))
  }

  /** The Bun runner, `--once`, as a user runs it. */
  async once(extra: Record<string, string> = {}): Promise<CliResult> {
    const result = await runCli(["--once"], this.env(extra), { cwd: this.dir })
    this.output.push(result.stdout, result.stderr)
    return result
  }

  /** The Bun runner polling on `interval` until stopped. */
  loop(interval: string, extra: Record<string, string> = {}) {
    const run = startCli([], this.env({ POLL_INTERVAL: interval, ...extra }), {
      cwd: this.dir,
    })
    const done = run.done.then((result) => {
      this.output.push(result.stdout, result.stderr)
      return result
    })
    return { ...run, done }
  }

  /**
   * The core pass in-process on the same SQLite file, for rows where the
   * Bun runner's patience (30 s timeout, ~2 min of retries) is too slow.
   * Its log lines go to `output` like the runner's.
   */
  async inProcess(
    options: InProcessOptions = {},
  ): Promise<Exit.Exit<PassSummary, unknown>> {
    const lines: Array<string> = []
    const logger = Logger.map(Logger.logfmtLogger, (line) => lines.push(line))
    const env = { ...this.env(), ...options.env }
    const layer = Layer.mergeAll(
      FlyEvents.Default,
      EventStore.Default,
      Notifier.Default,
    ).pipe(
      // Merged, as the Bun runner does: the pass reads the database and
      // the retry policy itself, beside the services.
      Layer.provideMerge(
        Layer.mergeAll(
          FetchHttpClient.layer,
          RetryPolicy.layer(options.policy ?? quickRetry),
          layerDatabase(this.databasePath),
        ),
      ),
      Layer.provide(
        Layer.setConfigProvider(
          ConfigProvider.fromMap(new Map(Object.entries(env))),
        ),
      ),
    )
    const pass =
      options.clockOffsetMs === undefined
        ? runPass
        : Effect.withClock(runPass, clockAhead(options.clockOffsetMs))
    const exit = await Effect.runPromiseExit(
      pass.pipe(
        // As the Bun runner reports a failed pass.
        Effect.tapErrorCause((cause) =>
          Effect.logError("pass failed").pipe(
            Effect.annotateLogs(
              "error",
              Cause.isFailType(cause) && cause.error instanceof Error
                ? cause.error.message
                : Cause.pretty(cause),
            ),
          ),
        ),
        Effect.provide(layer),
        Effect.provide(Logger.replace(Logger.defaultLogger, logger)),
        Logger.withMinimumLogLevel(LogLevel.Debug),
      ),
    )
    this.output.push(lines.join("\n"))
    return exit
  }

  /**
   * Alerts not yet delivered, read from the SQLite file: those a pass has
   * claimed (until after `now`) and those free for the next pass.
   */
  undelivered(now: number): { claimed: number; unclaimed: number } {
    const db = new Database(this.databasePath, { readonly: true })
    try {
      const row = db
        .query(
          `SELECT
             coalesce(sum(claimed_until > ?1), 0) AS claimed,
             coalesce(sum(claimed_until IS NULL OR claimed_until <= ?1), 0)
               AS unclaimed
           FROM events WHERE notified_at IS NULL`,
        )
        .get(now) as { claimed: number; unclaimed: number }
      return { claimed: row.claimed, unclaimed: row.unclaimed }
    } finally {
      db.close()
    }
  }

  /**
   * Event keys in every Discord message Fake Discord accepted, in order;
   * an embed for several events of one machine names each of them.
   */
  posted(): Array<string> {
    return this.discord.messages.flatMap((m) =>
      (m.embeds ?? []).flatMap((e: { footer?: { text?: string } }) =>
        footerKeys(e.footer?.text ?? ""),
      ),
    )
  }

  /** Keys posted more than once, with their count. */
  duplicates(): Map<string, number> {
    const counts = new Map<string, number>()
    for (const key of this.posted()) counts.set(key, (counts.get(key) ?? 0) + 1)
    return new Map([...counts].filter(([, n]) => n > 1))
  }

  log(): string {
    return this.output.join("\n")
  }

  /** Every tracked event posted, none twice, nothing else. */
  assertExactlyOnce(label = ""): void {
    assert.deepStrictEqual(
      [...this.duplicates()],
      [],
      `${label} duplicates: ${this.log()}`,
    )
    assert.sameMembers(this.posted(), this.expected, `${label}\n${this.log()}`)
  }
}

/** Starts a rig for `fn` and always stops it. */
export const withRig = async <A>(fn: (rig: Rig) => Promise<A>): Promise<A> => {
  const rig = await Rig.start()
  try {
    return await fn(rig)
  } finally {
    await rig.stop()
  }
}

export const sleep = (ms: number) =>
  new Promise<void>((resolve) => setTimeout(resolve, ms))

/**
 * How long a row waits for something that takes a second or two: only a
 * hang gets near it, so a slow or busy machine cannot fail a row.
 */
export const WATCHDOG_MS = 120_000

/** Waits until `check` holds, polling every 25 ms, for at most `ms`. */
export const waitFor = async (check: () => boolean, ms: number) => {
  const deadline = Date.now() + ms
  while (!check() && Date.now() < deadline) await sleep(25)
  return check()
}

/**
 * Counts from the last "pass done" line in `output`; logfmt annotations
 * come in no fixed order.
 */
export const passCounts = (
  output: string,
  names: ReadonlyArray<string>,
): Array<number | undefined> => {
  const lines = output.match(/message="pass done.*/g) ?? []
  const line = lines[lines.length - 1] ?? ""
  return names.map((name) => {
    const value = new RegExp(`(?:^| )${name}=(\\d+)`).exec(line)?.[1]
    return value === undefined ? undefined : Number(value)
  })
}

/** The secrets check each fault file ends with. */
export const assertNoSecrets = (extra: ReadonlyArray<string> = []) => {
  const everything = [...collected, ...extra].join("\n")
  assert.isAbove(everything.length, 0)
  for (const marker of SECRET_MARKERS) assert.notInclude(everything, marker)
}

/**
 * Sits in front of the fake Discord. Every request is forwarded at once
 * (so Discord posts it), and its answer is held `delayMs`, like a real
 * round trip; the first `drops` answers are never sent: the connection is
 * closed instead, after Discord accepted the message.
 */
export const discordProxy = async (
  target: string,
  options: { readonly delayMs?: number; readonly drops?: number },
) => {
  let dropped = 0
  // Open client connections and requests not yet forwarded or given up:
  // a killed client's last request can still be on its way to Discord.
  let connections = 0
  let forwarding = 0
  const server = http.createServer((req, res) => {
    forwarding++
    let settled = false
    const settle = () => {
      if (!settled) forwarding--
      settled = true
    }
    const chunks: Array<Buffer> = []
    req.on("data", (chunk: Buffer) => chunks.push(chunk))
    // Cut off before its end: nothing reaches Discord.
    req.on("close", () => {
      if (!req.complete) settle()
    })
    req.on("end", async () => {
      let answer: Response
      try {
        answer = await fetch(target + (req.url ?? "/"), {
          method: req.method ?? "POST",
          headers: { "content-type": req.headers["content-type"] ?? "" },
          body: Buffer.concat(chunks),
        })
      } finally {
        settle()
      }
      const body = await answer.text()
      await sleep(options.delayMs ?? 0)
      if (dropped < (options.drops ?? 0)) {
        dropped++
        req.socket.destroy()
        return
      }
      res.writeHead(answer.status, {
        "content-type": answer.headers.get("content-type") ?? "text/plain",
      })
      res.end(body)
    })
  })
  server.on("connection", (socket) => {
    connections++
    socket.on("close", () => connections--)
  })
  await new Promise<void>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve()),
  )
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    /**
     * Resolves once no client is connected and every request it received
     * has reached Discord or been given up: after its client died, what
     * Discord holds is final.
     */
    quiet: async () => {
      const quiet = await waitFor(
        () => connections === 0 && forwarding === 0,
        WATCHDOG_MS,
      )
      assert.isTrue(
        quiet,
        `proxy still busy: ${connections} connections, ${forwarding} requests`,
      )
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}
