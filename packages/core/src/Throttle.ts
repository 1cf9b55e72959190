import * as SqlClient from "@effect/sql/SqlClient"
import { readRows } from "./StoreSql.ts"
import { Clock, Config, Duration, Effect, Option, Schema } from "effect"
import {
  type Embed,
  escapeMarkdown,
  Limits,
  truncate,
} from "./DiscordMessage.ts"
import { EventStore, StoreError } from "./EventStore.ts"
import { humanDuration } from "./Pricing.ts"
import { durationVar, RetentionSettings } from "./Settings.ts"
import { countOrOff } from "./Storms.ts"

// One noisy app must not drown the channel: at most APP_ALERT_LIMIT events
// of an app are posted per APP_ALERT_WINDOW. Windows are fixed and aligned
// on Fly's timestamps, so what is held back depends on the events alone,
// not on when Discord took them. The rest are folded into
// `limit:<app>:<window start>`, summed up in one notice once the window is
// over.

// Lazy for the same reason as StormSettings.
export const ThrottleSettings = Config.suspend(() =>
  Config.all({
    limit: countOrOff("APP_ALERT_LIMIT", 20, 1),
    window: durationVar("APP_ALERT_WINDOW", "1 hour", { atLeast: "1 minute" }),
  }),
)
export type ThrottleSettings = Config.Config.Success<typeof ThrottleSettings>

const PendingRow = Schema.Struct({
  key: Schema.String,
  app: Schema.String,
  org: Schema.NullOr(Schema.String),
  timestamp: Schema.Number,
})

const CountRow = Schema.Struct({ n: Schema.Number })

const WindowRow = Schema.Struct({
  app: Schema.String,
  window_start: Schema.Number,
  window_end: Schema.Number,
  org: Schema.NullOr(Schema.String),
})

const TypeRow = Schema.Struct({
  type: Schema.String,
  n: Schema.Number,
  first: Schema.Number,
  last: Schema.Number,
})

/** What events of `app` in the window starting at `start` are folded into. */
export const limitKey = (app: string, start: number) => `limit:${app}:${start}`

const seconds = (at: number) => Math.floor(at / 1000)

export const suppressedEmbed = (options: {
  readonly app: string
  readonly start: number
  readonly end: number
  readonly byType: ReadonlyArray<typeof TypeRow.Type>
  readonly limit: Option.Option<number>
  readonly windowMs: number
  readonly key: string
}): Embed => {
  const total = options.byType.reduce((sum, row) => sum + row.n, 0)
  const first = Math.min(...options.byType.map((row) => row.first))
  const last = Math.max(...options.byType.map((row) => row.last))
  const app = escapeMarkdown(options.app)
  const rule = Option.match(options.limit, {
    onNone: () => "APP_ALERT_LIMIT was on when they were held back",
    onSome: (limit) =>
      `APP_ALERT_LIMIT allows ${limit} per app per ` +
      `${humanDuration(options.windowMs)} (APP_ALERT_WINDOW)`,
  })
  return {
    title: truncate(
      `${total} more event${total === 1 ? "" : "s"} on app ${app} suppressed`,
      Limits.title,
    ),
    color: 0xf39c12,
    description: truncate(
      `Between <t:${seconds(options.start)}:f> and ` +
        `<t:${seconds(options.end)}:f>, app ${app} had more events than ` +
        `alerts allowed: ${rule}. The rest were stored without an alert ` +
        `(first <t:${seconds(first)}:T>, last <t:${seconds(last)}:T>). ` +
        "To see more of them, raise APP_ALERT_LIMIT or set it to off.",
      Limits.description,
    ),
    fields: [
      {
        name: "Suppressed",
        value: truncate(
          options.byType
            .map((row) => `${escapeMarkdown(row.type)} ${row.n}`)
            .join(" · "),
          Limits.fieldValue,
        ),
      },
    ],
    footer: { text: options.key },
  }
}

const storeSql = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const run = readRows
  return { sql, run }
})

/** Folds what is over the limit in each window with undelivered events. */
const holdBack = (limit: number, windowMs: number, now: number) =>
  Effect.gen(function* () {
    const { sql, run } = yield* storeSql
    const store = yield* EventStore
    // Events already folded (a storm, a silence) neither count nor wait.
    const pending = yield* run(
      PendingRow,
      "read undelivered events",
    )(sql`SELECT key, app, org, timestamp FROM events
      WHERE notified_at IS NULL AND baseline = 0 AND folded_into IS NULL
      ORDER BY timestamp, key`)
    const windows = new Map<string, Array<typeof PendingRow.Type>>()
    for (const event of pending) {
      const start = Math.floor(event.timestamp / windowMs) * windowMs
      const id = limitKey(event.app, start)
      const list = windows.get(id)
      if (list === undefined) windows.set(id, [event])
      else list.push(event)
    }
    for (const [key, events] of windows) {
      const { app, org } = events[0]!
      const start = Math.floor(events[0]!.timestamp / windowMs) * windowMs
      const end = start + windowMs
      const [posted] = yield* run(
        CountRow,
        "count alerts of an app",
      )(sql`SELECT COUNT(*) AS n FROM events
        WHERE app = ${app} AND timestamp >= ${start} AND timestamp < ${end}
          AND baseline = 0 AND folded_into IS NULL
          AND notified_at IS NOT NULL`)
      // The first `limit` of the window, in timestamp order, are posted.
      const over = events.slice(Math.max(0, limit - (posted?.n ?? 0)))
      if (over.length === 0) continue
      // A window already summed up takes no more: an event Fly reports
      // that late is posted rather than folded into a sent summary.
      const open = yield* run(
        Schema.Struct({ app: Schema.String }),
        "record held-back window",
      )(sql`INSERT INTO throttled_windows ${sql.insert({
        app,
        window_start: start,
        window_end: end,
        org: org ?? events.find((event) => event.org !== null)?.org ?? null,
        created_at: now,
      })} ON CONFLICT (app, window_start) DO UPDATE
          SET org = COALESCE(throttled_windows.org, excluded.org)
          WHERE throttled_windows.noticed_at IS NULL
        RETURNING app`)
      if (open.length === 0) continue
      const folded = yield* store.fold(
        over.map((event) => event.key),
        key,
        now,
      )
      if (folded.length > 0)
        yield* Effect.logInfo("app over its alert limit").pipe(
          Effect.annotateLogs({
            app,
            window_start: start,
            held_back: folded.length,
          }),
        )
    }
  })

/** One notice per ended window in which events were held back. */
const sumUp = (settings: ThrottleSettings, now: number) =>
  Effect.gen(function* () {
    const { sql, run } = yield* storeSql
    const store = yield* EventStore
    const due = yield* run(
      WindowRow,
      "read held-back windows",
    )(sql`SELECT app, window_start, window_end, org FROM throttled_windows
      WHERE noticed_at IS NULL AND window_end <= ${now}
      ORDER BY window_start, app`)
    for (const window of due) {
      const key = limitKey(window.app, window.window_start)
      const byType = yield* run(
        TypeRow,
        "count held-back events",
      )(sql`SELECT type, COUNT(*) AS n, MIN(timestamp) AS first,
          MAX(timestamp) AS last
        FROM events
        WHERE app = ${window.app} AND timestamp >= ${window.window_start}
          AND timestamp < ${window.window_end} AND folded_into = ${key}
        GROUP BY type ORDER BY type`)
      // None left only when retention removed them: nothing to say.
      if (byType.length > 0)
        yield* store.addNotice({
          key,
          kind: "app-limit",
          createdAt: now,
          silent: false,
          embed: suppressedEmbed({
            app: window.app,
            start: window.window_start,
            end: window.window_end,
            byType,
            limit: settings.limit,
            windowMs: window.window_end - window.window_start,
            key,
          }),
          app: window.app,
          org: window.org ?? undefined,
        })
      yield* sql`UPDATE throttled_windows SET noticed_at = ${now}
        WHERE app = ${window.app} AND window_start = ${window.window_start}
          AND noticed_at IS NULL`.pipe(
        Effect.mapError(
          (cause) =>
            new StoreError({ operation: "note held-back window", cause }),
        ),
      )
    }
    if (due.length === 0) return
    // Kept no longer than the events they counted.
    const { eventsRetention } = yield* RetentionSettings
    yield* sql`DELETE FROM throttled_windows
      WHERE noticed_at IS NOT NULL
        AND window_end < ${now - Duration.toMillis(eventsRetention)}`.pipe(
      Effect.mapError(
        (cause) => new StoreError({ operation: "remove old windows", cause }),
      ),
    )
  })

/**
 * Holds back what is over APP_ALERT_LIMIT and sums up each ended window.
 * The summing up runs with the limit off too, for windows held back before.
 */
export const triageAppLimits = Effect.gen(function* () {
  const settings = yield* ThrottleSettings
  const now = yield* Clock.currentTimeMillis
  const windowMs = Duration.toMillis(settings.window)
  if (Option.isSome(settings.limit))
    yield* holdBack(settings.limit.value, windowMs, now)
  yield* sumUp(settings, now)
}).pipe(Effect.withSpan("Throttle.triage"))
