import { Clock, Config, ConfigError, Effect, Either } from "effect"
import { EventStore } from "./EventStore.ts"
import { globToRegExp } from "./Settings.ts"
import { endedHow, silenceEndedEmbed } from "./SilenceNotices.ts"
import {
  configRow,
  type EventRow,
  FOLD_PREFIX,
  NOTICE_KIND,
  type NoticeRow,
  SILENCED_NOTICE,
  silenceTable,
  toSilence,
} from "./SilenceTable.ts"

// A silence mutes an app (a glob) or one machine until a time. Alerts about
// it that are still waiting are settled without a message: events are
// folded into `silence:<id>`, notices given up as silenced, and each is
// counted, so the digest and the note sent when the silence ends can say
// how many there were. Silences come from SILENCES (ids `c-…`, from what
// they mute) or from the Bun CLI (numbered ids); both live in `silences`.

export type SilenceTarget =
  | { readonly _tag: "App"; readonly glob: string }
  | { readonly _tag: "Machine"; readonly id: string }

export interface Silence {
  readonly id: string
  readonly source: "config" | "cli"
  readonly target: SilenceTarget
  /** Alerts about things that happened before this instant are muted. */
  readonly until: number
  readonly reason: string | undefined
}

/** Longest reason accepted, in characters. */
export const MAX_REASON = 500
const KEYS = ["app", "machine", "until", "reason"]

/** Machine ids are matched exactly; a glob there would mute nothing. */
export const MACHINE_GLOB = (where: string, app: string) =>
  `${where} is a machine id, matched exactly; for a glob use ${app} (machine names are not matched)`
const EXAMPLE =
  '[{"app":"staging-*","until":"2026-12-24T00:00Z","reason":"load test"}]'

const INSTANT =
  /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?(Z|[+-]\d{2}:\d{2})$/

/**
 * An ISO 8601 date-time with a time zone (`2026-12-04T10:00Z`,
 * `2026-12-04T11:00:00+01:00`); undefined otherwise. Without a zone the
 * instant would depend on where the monitor runs.
 */
export const parseInstant = (text: string): number | undefined => {
  const m = INSTANT.exec(text.trim().toUpperCase())
  if (m === null) return undefined
  const [year, month, day, hour, minute] = m.slice(1, 6).map(Number)
  const second = Number(m[6] ?? 0)
  const millis = Number((m[7] ?? "0").padEnd(3, "0"))
  const zone = m[8]!
  const offset =
    zone === "Z"
      ? 0
      : (zone.startsWith("-") ? -1 : 1) *
        (Number(zone.slice(1, 3)) * 60 + Number(zone.slice(4, 6)))
  const days = new Date(Date.UTC(year!, month!, 0)).getUTCDate()
  if (
    month! < 1 ||
    month! > 12 ||
    day! < 1 ||
    day! > days ||
    hour! > 23 ||
    minute! > 59 ||
    second > 59 ||
    Math.abs(offset) > 18 * 60
  )
    return undefined
  return (
    Date.UTC(year!, month! - 1, day!, hour!, minute!, second, millis) -
    offset * 60_000
  )
}

/** `2026-12-04T10:00:00Z`: how instants are shown in the CLI and errors. */
export const formatInstant = (at: number): string =>
  new Date(at).toISOString().replace(/\.000Z$/, "Z")

// FNV-1a: a short id that stays the same while the entry mutes the same thing.
const hash = (text: string) => {
  let h = 0x811c9dc5
  for (const char of text) {
    h ^= char.codePointAt(0)!
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h.toString(16).padStart(8, "0")
}

export const describeTarget = (target: SilenceTarget): string =>
  target._tag === "App" ? `app ${target.glob}` : `machine ${target.id}`

export const configId = (target: SilenceTarget): string =>
  `c-${hash(`${target._tag}\u0000${target._tag === "App" ? target.glob : target.id}`)}`

const parseEntry = (
  entry: unknown,
  index: number,
): Either.Either<Silence, string> => {
  const at = `entry ${index + 1}`
  if (typeof entry !== "object" || entry === null || Array.isArray(entry))
    return Either.left(
      `${at}: expected an object with "app" or "machine", and "until"`,
    )
  const fields = entry as Record<string, unknown>
  const unknown = Object.keys(fields).find((key) => !KEYS.includes(key))
  if (unknown !== undefined)
    return Either.left(
      `${at}: unknown key ${JSON.stringify(unknown)}; allowed: ${KEYS.join(", ")}`,
    )
  const { app, machine, until, reason } = fields
  if ((app === undefined) === (machine === undefined))
    return Either.left(
      `${at}: give exactly one of "app" (a glob such as staging-*) or "machine" (a machine id)`,
    )
  const name = app === undefined ? "machine" : "app"
  const value = app ?? machine
  if (typeof value !== "string" || value.trim() === "")
    return Either.left(`${at}: "${name}" must be a non-empty string`)
  if (machine !== undefined && /[*?]/.test(value))
    return Either.left(MACHINE_GLOB(`${at}: "machine"`, '"app"'))
  if (until === undefined)
    return Either.left(
      `${at}: "until" is missing; give an ISO date-time such as 2026-12-24T00:00Z`,
    )
  const instant = typeof until === "string" ? parseInstant(until) : undefined
  if (instant === undefined)
    return Either.left(
      `${at}: "until" ${JSON.stringify(until)} is not an ISO date-time with a time zone, such as 2026-12-24T00:00Z`,
    )
  if (reason !== undefined && typeof reason !== "string")
    return Either.left(`${at}: "reason" must be a string`)
  if (reason !== undefined && Array.from(reason).length > MAX_REASON)
    return Either.left(
      `${at}: "reason" is longer than ${MAX_REASON} characters`,
    )
  const target: SilenceTarget =
    app === undefined
      ? { _tag: "Machine", id: value.trim() }
      : { _tag: "App", glob: value.trim() }
  return Either.right({
    id: configId(target),
    source: "config",
    target,
    until: instant,
    reason: reason?.trim() === "" ? undefined : reason?.trim(),
  })
}

/** The silences of SILENCES, or what is wrong with it. */
export const parseSilences = (
  text: string,
): Either.Either<ReadonlyArray<Silence>, string> => {
  if (text.trim() === "") return Either.right([])
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    return Either.left(`not valid JSON; expected an array such as ${EXAMPLE}`)
  }
  if (!Array.isArray(json))
    return Either.left(`expected a JSON array such as ${EXAMPLE}`)
  const silences: Array<Silence> = []
  for (const [index, entry] of json.entries()) {
    const parsed = parseEntry(entry, index)
    if (Either.isLeft(parsed)) return Either.left(parsed.left)
    const twin = silences.findIndex((s) => s.id === parsed.right.id)
    if (twin !== -1)
      return Either.left(
        `entries ${twin + 1} and ${index + 1} both silence ${describeTarget(parsed.right.target)}`,
      )
    silences.push(parsed.right)
  }
  return Either.right(silences)
}

export const SilenceSettings = Config.all({
  silences: Config.string("SILENCES").pipe(
    Config.mapOrFail((text) =>
      Either.mapLeft(parseSilences(text), (message) =>
        ConfigError.InvalidData([], message),
      ),
    ),
    Config.withDefault([] as ReadonlyArray<Silence>),
  ),
})
export type SilenceSettings = Config.Config.Success<typeof SilenceSettings>

const matcher = (target: SilenceTarget) => {
  if (target._tag === "Machine")
    return (_app: string, machineId?: string) => machineId === target.id
  const pattern = globToRegExp(target.glob)
  return (app: string) => pattern.test(app)
}

// ---- the pass

/**
 * Settles waiting alerts about what a silence mutes, counts them, and
 * queues one note per silence that has ended. Runs each pass, before
 * storms and limits; a pass with no silence reads one small table.
 */
export const triageSilences = Effect.gen(function* () {
  const now = yield* Clock.currentTimeMillis
  const { silences: configured } = yield* SilenceSettings
  const table = yield* silenceTable
  const store = yield* EventStore

  // SILENCES is copied into the table, so an entry that expires or is
  // taken out of SILENCES is noticed like one removed with the CLI.
  const rows = new Map((yield* table.rows).map((row) => [row.id, row]))
  for (const silence of configured) {
    const row = rows.get(silence.id)
    if (row === undefined) {
      yield* table.insertConfig(silence, now)
      rows.set(silence.id, configRow(silence, now))
      continue
    }
    // Ended, then given a later `until`: a new silence as far as counts go.
    const reopened = row.ended_at !== null && silence.until > now
    if (
      reopened ||
      row.ends_at !== silence.until ||
      row.reason !== (silence.reason ?? null) ||
      row.removed_at !== null
    ) {
      yield* table.updateConfig(silence, reopened)
      rows.set(silence.id, {
        ...row,
        ends_at: silence.until,
        reason: silence.reason ?? null,
        removed_at: null,
        ended_at: reopened ? null : row.ended_at,
      })
    }
  }
  const inConfig = new Set(configured.map((silence) => silence.id))
  for (const row of rows.values())
    if (
      row.source === "config" &&
      row.removed_at === null &&
      !inConfig.has(row.id)
    ) {
      yield* table.remove(row.id, now, "config")
      rows.set(row.id, { ...row, removed_at: now })
    }

  const live = [...rows.values()]
    .filter((row) => row.removed_at === null)
    .map((row) => {
      const silence = toSilence(row)
      return { silence, matches: matcher(silence.target) }
    })
  const firstMatch = (app: string, machineId: string | undefined, at: number) =>
    live.find(
      ({ silence, matches }) => at < silence.until && matches(app, machineId),
    )?.silence

  let events = 0
  let notices = 0
  if (live.length > 0) {
    const bySilence = new Map<string, Array<typeof EventRow.Type>>()
    for (const event of yield* table.waitingEvents(now)) {
      const silence = firstMatch(event.app, event.machine_id, event.timestamp)
      if (silence === undefined) continue
      bySilence.set(silence.id, [...(bySilence.get(silence.id) ?? []), event])
    }
    for (const [id, waiting] of bySilence) {
      const folded = new Set(
        yield* store.fold(
          waiting.map((event) => event.key),
          `${FOLD_PREFIX}${id}`,
          now,
        ),
      )
      const byType = new Map<string, number>()
      for (const event of waiting)
        if (folded.has(event.key))
          byType.set(event.type, (byType.get(event.type) ?? 0) + 1)
      yield* table.addCounts(id, byType)
      events += folded.size
    }

    const noticesBySilence = new Map<string, Array<typeof NoticeRow.Type>>()
    for (const notice of yield* table.waitingNotices(now)) {
      const silence = firstMatch(notice.app, undefined, notice.created_at)
      if (silence === undefined) continue
      noticesBySilence.set(silence.id, [
        ...(noticesBySilence.get(silence.id) ?? []),
        notice,
      ])
    }
    for (const [id, waiting] of noticesBySilence) {
      yield* store.giveUpNotices(
        waiting.map((notice) => notice.key),
        `${SILENCED_NOTICE}${FOLD_PREFIX}${id})`,
        now,
      )
      const byKind = new Map<string, number>()
      for (const notice of waiting)
        byKind.set(notice.kind, (byKind.get(notice.kind) ?? 0) + 1)
      yield* table.addCounts(id, byKind)
      notices += waiting.length
    }
  }

  // One note per silence that has ended, unless it muted nothing.
  const ended = [...rows.values()].filter(
    (row) =>
      row.ended_at === null && (row.removed_at !== null || row.ends_at <= now),
  )
  if (ended.length > 0) {
    const counts = yield* table.counts
    for (const row of ended) {
      const silence = toSilence(row)
      const byType = counts.get(row.id) ?? new Map<string, number>()
      if (byType.size > 0) {
        const key = `silence ${row.id} ${row.ends_at} ended`
        const glob = silence.target._tag === "App" ? silence.target.glob : ""
        yield* store.addNotice({
          key,
          kind: NOTICE_KIND,
          createdAt: now,
          silent: false,
          embed: silenceEndedEmbed({
            silence,
            counts: byType,
            how: endedHow(row),
            key,
          }),
          // A glob naming one app routes like that app's alerts.
          ...(glob !== "" && !/[*?]/.test(glob) ? { app: glob } : {}),
        })
      }
      yield* table.markEnded(row.id, now)
    }
  }
  if (events + notices > 0)
    yield* Effect.log("alerts silenced").pipe(
      Effect.annotateLogs({ events, notices }),
    )
}).pipe(Effect.withSpan("Silences.triage"))

/** Alerts silences settled within `[from, to)`, per app, for the digest. */
export const silencedByApp = (from: number, to: number) =>
  Effect.flatMap(silenceTable, (table) => table.silencedByApp(from, to)).pipe(
    Effect.map((rows) => rows.map((row) => ({ app: row.app, events: row.n }))),
  )
