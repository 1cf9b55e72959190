import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import {
  Clock,
  Config,
  ConfigError,
  Duration,
  Effect,
  Either,
  Option,
  type ParseResult,
  Schema,
} from "effect"
import {
  code,
  type Embed,
  type EmbedField,
  escapeMarkdown,
  Limits,
  truncate,
} from "./DiscordMessage.ts"
import { EventStore, type MachineRecord, StoreError } from "./EventStore.ts"
import { estimate, humanDuration, usd } from "./Pricing.ts"
import { CostSettings, durationVar, RetentionSettings } from "./Settings.ts"
import { FOLD_PREFIX as SILENCE_FOLD } from "./SilenceTable.ts"

// A machine that keeps starting and exiting would post an alert per event.
// Once STORM_EVENTS of its start/exit events fall within STORM_WINDOW, it is
// in a storm: one alert, its events folded into the storm instead of posted,
// an update at most every STORM_UPDATE_EVERY, and a note when it calms down.
// The state lives in the `storms` table, so a restart repeats nothing.

/** A whole number of at least `min`, or `off` (none). */
export const countOrOff = (name: string, fallback: number, min: number) =>
  Config.string(name).pipe(
    Config.mapOrFail((text) => {
      const trimmed = text.trim()
      if (/^(off|never|none)$/i.test(trimmed))
        return Either.right(Option.none<number>())
      return /^\d+$/.test(trimmed) && Number(trimmed) >= min
        ? Either.right(Option.some(Number(trimmed)))
        : Either.left(
            ConfigError.InvalidData(
              [],
              `expected a whole number of at least ${min}, or "off", got "${text}"`,
            ),
          )
    }),
    Config.withDefault(Option.some(fallback)),
  )

// Lazy: Settings.ts lists this in CoreSettings and this file reads
// Settings.ts, so neither may use the other while it is being loaded.
export const StormSettings = Config.suspend(() =>
  Config.all({
    events: countOrOff("STORM_EVENTS", 6, 2),
    window: durationVar("STORM_WINDOW", "10 minutes"),
    updateEvery: durationVar("STORM_UPDATE_EVERY", "30 minutes", {
      allowOff: true,
    }),
  }),
)
export type StormSettings = Config.Config.Success<typeof StormSettings>

/** Exits whose codes an alert lists, newest last. */
const LISTED_EXITS = 5

const StormRow = Schema.Struct({
  key: Schema.String,
  machine_id: Schema.String,
  app: Schema.String,
  org: Schema.NullOr(Schema.String),
  started_at: Schema.Number,
  detected_at: Schema.Number,
  announced: Schema.Number,
  reported: Schema.Number,
  updates: Schema.Number,
  last_notice_at: Schema.NullOr(Schema.Number),
})
type StormRow = typeof StormRow.Type

const BurstRow = Schema.Struct({
  machine_id: Schema.String,
  app: Schema.String,
  org: Schema.NullOr(Schema.String),
  first: Schema.Number,
})

const StatsRow = Schema.Struct({
  events: Schema.Number,
  last: Schema.NullOr(Schema.Number),
  exits: Schema.NullOr(Schema.Number),
  ooms: Schema.NullOr(Schema.Number),
})

const ExitRow = Schema.Struct({
  exit_code: Schema.NullOr(Schema.Number),
  oom_killed: Schema.NullOr(Schema.Number),
})

const KeyRow = Schema.Struct({ key: Schema.String })

/** What the store holds of one storm's start/exit events. */
interface StormStats {
  readonly events: number
  readonly last: number
  readonly exits: number
  readonly ooms: number
  /** The latest exits, oldest first. */
  readonly codes: ReadonlyArray<typeof ExitRow.Type>
}

const storeSql = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const run =
    <A, I>(schema: Schema.Schema<A, I>, operation: string) =>
    (statement: Effect.Effect<ReadonlyArray<unknown>, SqlError>) =>
      statement.pipe(
        Effect.flatMap(Schema.decodeUnknown(Schema.Array(schema))),
        Effect.mapError(
          (cause: SqlError | ParseResult.ParseError) =>
            new StoreError({ operation, cause }),
        ),
      )
  // A silenced machine's events are muted: they make no storm either.
  const notSilenced = sql`(folded_into IS NULL OR folded_into NOT LIKE ${`${SILENCE_FOLD}%`})`
  return { sql, run, notSilenced }
})

// ---- embeds

const Colors = { storm: 0xe74c3c, update: 0xf39c12, calm: 0x2ecc71 } as const

const who = (machine: MachineRecord | undefined, machineId: string) =>
  truncate(escapeMarkdown(machine?.name || machineId), 100)

const placeFields = (
  storm: StormRow,
  machine: MachineRecord | undefined,
): ReadonlyArray<EmbedField> => [
  {
    name: "App",
    value:
      storm.app.trim() === "" ? "–" : truncate(escapeMarkdown(storm.app), 200),
    inline: true,
  },
  {
    name: "Machine",
    value: truncate(
      `${escapeMarkdown(machine?.name ?? "")} ${code(storm.machine_id)}`.trim(),
      Limits.fieldValue,
    ),
    inline: true,
  },
]

const plural = (count: number, word: string) =>
  `${count} ${word}${count === 1 ? "" : "s"}`

const exitCodes = (stats: StormStats): EmbedField => {
  const codes = stats.codes
    .map(
      (exit) =>
        `${exit.exit_code ?? "unknown"}${exit.oom_killed === 1 ? " (OOM)" : ""}`,
    )
    .join(" · ")
  const oom =
    stats.ooms > 0
      ? `\n${stats.ooms} of ${plural(stats.exits, "exit")} out of memory`
      : ""
  return {
    name: "Last exit codes",
    value: codes === "" ? "no exit seen" : codes + oom,
  }
}

const seen = (stats: StormStats) =>
  `${plural(stats.events, "start/exit event")}`

export const stormEmbed = (options: {
  readonly storm: StormRow
  readonly machine: MachineRecord | undefined
  readonly stats: StormStats
  readonly hourly: string | undefined
  readonly settings: StormSettings
}): Embed => {
  const { storm, stats, settings } = options
  const updateMs = Duration.toMillis(settings.updateEvery)
  const windowText = humanDuration(Duration.toMillis(settings.window))
  return {
    title: truncate(
      `${who(options.machine, storm.machine_id)} is in a restart storm`,
      Limits.title,
    ),
    color: Colors.storm,
    fields: [
      ...placeFields(storm, options.machine),
      {
        name: "Events",
        value: `${seen(stats)} in ${humanDuration(stats.last - storm.started_at)}, since <t:${Math.floor(storm.started_at / 1000)}:f>`,
      },
      exitCodes(stats),
      ...(options.hourly === undefined
        ? []
        : [{ name: "Cost", value: options.hourly }]),
      {
        name: "From now on",
        value:
          "Its start, stop and exit events are folded into this storm" +
          (Number.isFinite(updateMs)
            ? `, with an update every ${humanDuration(updateMs)} at most (STORM_UPDATE_EVERY)`
            : " without updates (STORM_UPDATE_EVERY=off)") +
          `, until ${windowText} pass without a start or exit (STORM_WINDOW).`,
      },
    ],
    footer: { text: storm.key },
  }
}

export const stormUpdateEmbed = (options: {
  readonly storm: StormRow
  readonly machine: MachineRecord | undefined
  readonly stats: StormStats
  readonly key: string
  readonly now: number
}): Embed => {
  const { storm, stats } = options
  return {
    title: truncate(
      `${who(options.machine, storm.machine_id)} is still in a restart storm`,
      Limits.title,
    ),
    color: Colors.update,
    fields: [
      ...placeFields(storm, options.machine),
      {
        name: "Since the last update",
        value: plural(stats.events - storm.reported, "start/exit event"),
      },
      {
        name: "Lasting",
        value: `${humanDuration(options.now - storm.started_at)} so far, ${seen(stats)} in all`,
      },
      exitCodes(stats),
    ],
    footer: { text: options.key },
  }
}

export const calmEmbed = (options: {
  readonly storm: StormRow
  readonly machine: MachineRecord | undefined
  readonly stats: StormStats
  readonly key: string
  readonly settings: StormSettings
}): Embed => {
  const { storm, stats } = options
  const unreported = stats.events - storm.reported
  const seconds = (at: number) => Math.floor(at / 1000)
  return {
    title: truncate(
      `${who(options.machine, storm.machine_id)} has calmed down`,
      Limits.title,
    ),
    color: Colors.calm,
    fields: [
      ...placeFields(storm, options.machine),
      {
        name: "Storm",
        value:
          `${seen(stats)} over ${humanDuration(stats.last - storm.started_at)}, ` +
          `<t:${seconds(storm.started_at)}:f> to <t:${seconds(stats.last)}:f>` +
          (unreported > 0 ? `; ${unreported} since the last update` : ""),
      },
      exitCodes(stats),
      {
        name: "State now",
        value:
          options.machine === undefined
            ? "unknown"
            : truncate(escapeMarkdown(options.machine.state), 100) || "–",
      },
      {
        name: "From now on",
        value: `No start or exit for ${humanDuration(Duration.toMillis(options.settings.window))} (STORM_WINDOW): its events are announced one by one again.`,
      },
    ],
    footer: { text: options.key },
  }
}

// ---- the pass

/** Machines with STORM_EVENTS start/exit events within STORM_WINDOW. */
const bursts = (since: number, threshold: number) =>
  Effect.gen(function* () {
    const { sql, run, notSilenced } = yield* storeSql
    return yield* run(
      BurstRow,
      "find restart storms",
    )(sql`SELECT machine_id, MAX(app) AS app, MAX(org) AS org,
        MIN(timestamp) AS first
      FROM events
      WHERE timestamp > ${since} AND type IN ('start', 'exit')
        AND baseline = 0 AND ${notSilenced}
      GROUP BY machine_id
      HAVING COUNT(*) >= ${threshold}`)
  })

const openStorms = Effect.gen(function* () {
  const { sql, run } = yield* storeSql
  return yield* run(
    StormRow,
    "read storms",
  )(sql`SELECT key, machine_id, app, org, started_at, detected_at,
      announced, reported, updates, last_notice_at
    FROM storms WHERE ended_at IS NULL
    ORDER BY started_at, key`)
})

const statsOf = (storm: StormRow) =>
  Effect.gen(function* () {
    const { sql, run, notSilenced } = yield* storeSql
    const [row] = yield* run(
      StatsRow,
      "count storm events",
    )(sql`SELECT COUNT(*) AS events, MAX(timestamp) AS last,
        SUM(CASE WHEN type = 'exit' THEN 1 ELSE 0 END) AS exits,
        SUM(CASE WHEN type = 'exit' AND oom_killed = 1 THEN 1 ELSE 0 END)
          AS ooms
      FROM events
      WHERE machine_id = ${storm.machine_id}
        AND timestamp >= ${storm.started_at}
        AND type IN ('start', 'exit') AND baseline = 0
        AND ${notSilenced}`)
    const codes = yield* run(
      ExitRow,
      "read storm exits",
    )(sql`SELECT exit_code, oom_killed FROM events
      WHERE machine_id = ${storm.machine_id}
        AND timestamp >= ${storm.started_at}
        AND type = 'exit' AND baseline = 0 AND ${notSilenced}
      ORDER BY timestamp DESC, key DESC
      LIMIT ${LISTED_EXITS}`)
    return {
      events: row?.events ?? 0,
      // Only if retention removed them all: the storm is then long over.
      last: row?.last ?? storm.started_at,
      exits: row?.exits ?? 0,
      ooms: row?.ooms ?? 0,
      codes: [...codes].reverse(),
    } satisfies StormStats
  })

/**
 * Folds the machine's undelivered start/stop/exit events into the storm;
 * with `until`, only those up to that Fly time. Returns how many it folded.
 */
const foldInto = (storm: StormRow, now: number, until?: number) =>
  Effect.gen(function* () {
    const { sql, run } = yield* storeSql
    const store = yield* EventStore
    const upTo =
      until === undefined ? sql.literal("") : sql`AND timestamp <= ${until}`
    const pending = yield* run(
      KeyRow,
      "read storm events",
    )(sql`SELECT key FROM events
      WHERE machine_id = ${storm.machine_id} AND notified_at IS NULL
        AND type IN ('start', 'stop', 'exit') ${upTo}
      ORDER BY timestamp, key`)
    if (pending.length === 0) return 0
    const folded = yield* store.fold(
      pending.map((row) => row.key),
      storm.key,
      now,
    )
    return folded.length
  })

const write = (
  operation: string,
  statement: Effect.Effect<unknown, SqlError>,
) =>
  statement.pipe(
    Effect.mapError((cause) => new StoreError({ operation, cause })),
  )

/**
 * Opens a storm for every machine newly past STORM_EVENTS, folds storm
 * events, queues the first alert, updates and the calm note. Each notice
 * key is deterministic, so two passes at once queue it once.
 */
export const triageStorms = Effect.gen(function* () {
  const settings = yield* StormSettings
  if (Option.isNone(settings.events)) return
  const { sql } = yield* storeSql
  const store = yield* EventStore
  const now = yield* Clock.currentTimeMillis
  const windowMs = Duration.toMillis(settings.window)
  const updateMs = Duration.toMillis(settings.updateEvery)

  const before = yield* openStorms
  const stormy = new Set(before.map((storm) => storm.machine_id))
  for (const burst of yield* bursts(now - windowMs, settings.events.value)) {
    if (stormy.has(burst.machine_id)) continue
    // At most one open storm per machine (storms_open), whoever inserts.
    yield* write(
      "open storm",
      sql`INSERT INTO storms ${sql.insert({
        key: `storm:${burst.machine_id}:${burst.first}`,
        machine_id: burst.machine_id,
        app: burst.app,
        org: burst.org,
        started_at: burst.first,
        detected_at: now,
      })} ON CONFLICT DO NOTHING`,
    )
  }
  const storms = yield* openStorms
  if (storms.length === 0) return

  const { prices } = yield* CostSettings
  const machines = yield* store.machines()
  for (const storm of storms) {
    const machine = machines.get(storm.machine_id)
    const stats = yield* statsOf(storm)
    const calm = now - stats.last >= windowMs
    const folded = yield* foldInto(storm, now, calm ? stats.last : undefined)
    const notice = (key: string, embed: Embed) =>
      store.addNotice({
        key,
        kind: "storm",
        createdAt: now,
        silent: false,
        embed,
        app: storm.app,
        org: storm.org ?? undefined,
      })
    let reported = storm.reported
    if (storm.announced === 0) {
      const price =
        machine === undefined
          ? undefined
          : estimate(prices, machine.guest, machine.region, machine.size)
      yield* notice(
        storm.key,
        stormEmbed({
          storm,
          machine,
          stats,
          hourly:
            price === undefined
              ? undefined
              : `≈ ${usd(price.hourly)}/h while started` +
                (price.caveat === undefined
                  ? ""
                  : ` (${escapeMarkdown(price.caveat)})`),
          settings,
        }),
      )
      yield* write(
        "announce storm",
        sql`UPDATE storms SET announced = 1, reported = ${stats.events},
            last_notice_at = ${now}
          WHERE key = ${storm.key} AND announced = 0`,
      )
      reported = stats.events
      yield* Effect.logWarning("restart storm").pipe(
        Effect.annotateLogs({
          app: storm.app,
          machine: storm.machine_id,
          events: stats.events,
          folded,
        }),
      )
    } else if (
      !calm &&
      stats.events > storm.reported &&
      now - (storm.last_notice_at ?? storm.detected_at) >= updateMs
    ) {
      const key = `${storm.key}:update:${storm.updates + 1}`
      yield* notice(key, stormUpdateEmbed({ storm, machine, stats, key, now }))
      yield* write(
        "update storm",
        sql`UPDATE storms SET updates = ${storm.updates + 1},
            reported = ${stats.events}, last_notice_at = ${now}
          WHERE key = ${storm.key} AND updates = ${storm.updates}`,
      )
      reported = stats.events
    }
    if (!calm) continue
    const key = `${storm.key}:calm`
    yield* notice(
      key,
      calmEmbed({
        storm: { ...storm, reported },
        machine,
        stats,
        key,
        settings,
      }),
    )
    yield* write(
      "end storm",
      sql`UPDATE storms SET ended_at = ${now}, last_event_at = ${stats.last}
        WHERE key = ${storm.key} AND ended_at IS NULL`,
    )
    yield* Effect.log("restart storm over").pipe(
      Effect.annotateLogs({
        app: storm.app,
        machine: storm.machine_id,
        events: stats.events,
        lasted_ms: stats.last - storm.started_at,
      }),
    )
    // Storms outlive their events by no more than the events' retention.
    const { eventsRetention } = yield* RetentionSettings
    yield* write(
      "remove old storms",
      sql`DELETE FROM storms
        WHERE ended_at IS NOT NULL
          AND ended_at < ${now - Duration.toMillis(eventsRetention)}`,
    )
  }
}).pipe(Effect.withSpan("Storms.triage"))
