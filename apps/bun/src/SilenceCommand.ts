import { humanDuration } from "@flymon/core/Pricing"
import { describeConfigError, parseDuration } from "@flymon/core/Settings"
import {
  describeTarget,
  formatInstant,
  MACHINE_GLOB,
  MAX_REASON,
  parseInstant,
  type Silence,
  SilenceSettings,
  type SilenceTarget,
} from "@flymon/core/Silences"
import { silenceTable, toSilence } from "@flymon/core/SilenceTable"
import {
  Cause,
  Clock,
  Config,
  Console,
  Duration,
  Effect,
  Logger,
  LogLevel,
} from "effect"
import { existsSync } from "node:fs"
import { DatabasePath, layerDatabase } from "./Database.ts"

// `silence add|list|rm`: silences in the database, without Fly or Discord.
// Each command prints its result and returns the process's exit code: 0,
// 1 when the database cannot be used, 2 for a bad argument (one line).

export const SILENCE_USAGE = `  silence add app=<glob>|machine=<id> for=<duration>|until=<date-time>
              [reason=<text>]
              mute alerts about matching apps (* and ?) or one machine:
              they are recorded and counted, not sent
  silence list
              every silence, from SILENCES and from the database, with how
              many alerts each has silenced so far
  silence rm <id>
              end a silence made with silence add (edit SILENCES for others)`

const ADD_KEYS = ["app", "machine", "for", "until", "reason"]

export class BadArgument {
  constructor(readonly message: string) {}
}

// User text goes to a terminal: control characters could move the cursor.
const printable = (text: string) =>
  text.replace(/[\u0000-\u001f\u007f-\u009f]/g, "")

const cut = (text: string, max: number) =>
  Array.from(text).length <= max
    ? text
    : Array.from(text)
        .slice(0, max - 1)
        .join("") + "…"

const table = (rows: ReadonlyArray<ReadonlyArray<string>>) => {
  const widths = rows[0]!.map((_, column) =>
    Math.max(...rows.map((row) => Array.from(row[column]!).length)),
  )
  return rows.map((row) =>
    row
      .map(
        (cell, column) =>
          cell + " ".repeat(widths[column]! - Array.from(cell).length),
      )
      .join("  ")
      .trimEnd(),
  )
}

interface AddRequest {
  readonly target: SilenceTarget
  readonly until: number
  readonly reason: string | undefined
}

/** `app=web-* for=2h reason="deploying"` into a silence, or why not. */
export const parseAdd = (
  args: ReadonlyArray<string>,
  now: number,
): AddRequest | BadArgument => {
  const bad = (message: string) => new BadArgument(`silence add: ${message}`)
  const given = new Map<string, string>()
  for (const arg of args) {
    const at = arg.indexOf("=")
    const key = at === -1 ? arg : arg.slice(0, at)
    if (at === -1 || !ADD_KEYS.includes(key))
      return bad(
        `unexpected ${JSON.stringify(arg)}; expected app=<glob> or machine=<id>, ` +
          "for=<duration> or until=<date-time>, and optionally reason=<text>",
      )
    if (given.has(key)) return bad(`${key}= is given twice`)
    given.set(key, arg.slice(at + 1))
  }
  const app = given.get("app")
  const machine = given.get("machine")
  if ((app === undefined) === (machine === undefined))
    return bad("give exactly one of app=<glob> (such as web-*) or machine=<id>")
  if ((app ?? machine)!.trim() === "")
    return bad(`${app === undefined ? "machine" : "app"}= is empty`)
  if (machine !== undefined && /[*?]/.test(machine))
    return bad(MACHINE_GLOB("machine=", "app=<glob>"))
  const target: SilenceTarget =
    app === undefined
      ? { _tag: "Machine", id: machine!.trim() }
      : { _tag: "App", glob: app.trim() }
  const span = given.get("for")
  const until = given.get("until")
  if ((span === undefined) === (until === undefined))
    return bad(
      "give exactly one of for=<duration> (such as 2h) or until=<date-time> " +
        "(such as 2026-12-04T10:00Z)",
    )
  let ends: number
  if (span !== undefined) {
    const duration = parseDuration(span)
    if (duration === undefined || !Duration.isFinite(duration))
      return bad(
        `for=${JSON.stringify(span)} is not a duration such as 30m, 2h or 3d`,
      )
    // Whole seconds, so what is printed is exactly what is stored.
    ends = Math.ceil((now + Duration.toMillis(duration)) / 1000) * 1000
  } else {
    const instant = parseInstant(until!)
    if (instant === undefined)
      return bad(
        `until=${JSON.stringify(until)} is not a date-time with a time zone ` +
          "such as 2026-12-04T10:00Z",
      )
    ends = instant
  }
  if (ends <= now)
    return bad(`the silence would end at ${formatInstant(ends)}, in the past`)
  const reason = given.get("reason")?.trim()
  if (reason !== undefined && Array.from(reason).length > MAX_REASON)
    return bad(`reason= is longer than ${MAX_REASON} characters`)
  return {
    target,
    until: ends,
    reason: reason === "" ? undefined : reason,
  }
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`

const total = (counts: ReadonlyMap<string, number> | undefined) =>
  [...(counts ?? new Map<string, number>()).values()].reduce((a, b) => a + b, 0)

type Command =
  | { readonly _tag: "Add"; readonly request: AddRequest }
  | { readonly _tag: "List" }
  | { readonly _tag: "Rm"; readonly id: string }
  | { readonly _tag: "Help" }

/** The command, or what is wrong with the arguments, before any I/O. */
const parseCommand = (
  args: ReadonlyArray<string>,
  configured: ReadonlyArray<Silence>,
  now: number,
): Command | BadArgument => {
  const [command, ...rest] = args
  if (command === "--help" || command === "-h" || command === "help")
    return { _tag: "Help" }
  if (command === "add") {
    const request = parseAdd(rest, now)
    return request instanceof BadArgument ? request : { _tag: "Add", request }
  }
  if (command === "list")
    return rest.length > 0
      ? new BadArgument("silence list: takes no arguments")
      : { _tag: "List" }
  if (command === "rm") {
    if (rest.length !== 1)
      return new BadArgument(
        "silence rm: expected one id, as silence list shows it",
      )
    const id = rest[0]!
    return configured.some((silence) => silence.id === id)
      ? new BadArgument(
          `silence rm: ${id} is set in SILENCES; remove it there, and the ` +
            "next pass ends it",
        )
      : { _tag: "Rm", id }
  }
  return new BadArgument(
    command === undefined
      ? "silence: expected add, list or rm (see --help)"
      : `silence: unknown command ${JSON.stringify(printable(command))}; expected add, list or rm`,
  )
}

const add = (request: AddRequest, now: number) =>
  Effect.gen(function* () {
    const store = yield* silenceTable
    const id = yield* store.insertCli(
      request.target,
      request.until,
      request.reason,
      now,
    )
    yield* Console.log(
      printable(
        `Added silence ${id} on ${describeTarget(request.target)} until ` +
          `${formatInstant(request.until)} (${humanDuration(request.until - now)})` +
          (request.reason === undefined ? "" : `; reason: ${request.reason}`),
      ),
    )
    yield* Console.log(
      `Its alerts are recorded and counted, not sent. End it early with: silence rm ${id}`,
    )
  })

const list = (configured: ReadonlyArray<Silence>, now: number) =>
  Effect.gen(function* () {
    const store = yield* silenceTable
    const rows = yield* store.rows
    const counts = yield* store.counts
    const silences = [
      ...configured,
      ...rows
        .filter((row) => row.source === "cli" && row.removed_at === null)
        .map(toSilence)
        .sort((a, b) => Number(a.id) - Number(b.id)),
    ]
    if (silences.length === 0)
      return yield* Console.log(
        "No silences. Add one with silence add, or set SILENCES.",
      )
    const lines = table([
      ["ID", "FROM", "TARGET", "UNTIL", "STATE", "SILENCED", "REASON"],
      ...silences.map((silence) => [
        silence.id,
        silence.source === "config" ? "SILENCES" : "silence add",
        cut(printable(describeTarget(silence.target)), 60),
        formatInstant(silence.until),
        silence.until > now ? "active" : "expired",
        // A SILENCES entry no pass has seen yet has silenced nothing.
        String(total(counts.get(silence.id))),
        silence.reason === undefined ? "" : cut(printable(silence.reason), 60),
      ]),
    ])
    yield* Console.log(lines.join("\n"))
  })

const remove = (id: string, now: number) =>
  Effect.gen(function* () {
    const store = yield* silenceTable
    const row = (yield* store.rows).find(
      (row) => row.id === id && row.source === "cli",
    )
    if (row === undefined || !(yield* store.remove(id, now, "cli")))
      return yield* Effect.fail(
        new BadArgument(
          `silence rm: no silence ${JSON.stringify(printable(id))} to remove; silence list shows them`,
        ),
      )
    const silenced = total((yield* store.counts).get(id))
    yield* Console.log(
      printable(
        `Removed silence ${id} on ${describeTarget(toSilence(row).target)}; ` +
          `it silenced ${plural(silenced, "alert")}.`,
      ),
    )
  })

const cannotUse = (databasePath: string, message: string) =>
  Console.error(
    `could not use the database at DATABASE_PATH=${databasePath}: ${message}`,
  ).pipe(Effect.as(1))

/** Runs `silence …`; the process's exit code. */
export const silenceCommand = (args: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const settings = yield* Effect.either(
      Config.all([SilenceSettings, DatabasePath]),
    )
    if (settings._tag === "Left") {
      yield* Effect.forEach(describeConfigError(settings.left), (line) =>
        Console.error(`configuration error: ${line}`),
      )
      return 2
    }
    const [{ silences }, databasePath] = settings.right
    const now = yield* Clock.currentTimeMillis
    const command = parseCommand(args, silences, now)
    if (command instanceof BadArgument)
      return yield* Console.error(command.message).pipe(Effect.as(2))
    if (command._tag === "Help")
      return yield* Console.log(`Usage:\n${SILENCE_USAGE}`).pipe(Effect.as(0))
    // Only add creates the database: with a mistyped DATABASE_PATH, list
    // and rm would otherwise find nothing without a word.
    if (command._tag !== "Add" && !existsSync(databasePath))
      return yield* Console.error(
        `no database at DATABASE_PATH=${databasePath}: ` +
          "run the monitor first, or point DATABASE_PATH at its database",
      ).pipe(Effect.as(1))
    const work =
      command._tag === "Add"
        ? add(command.request, now)
        : command._tag === "List"
          ? list(silences, now)
          : remove(command.id, now)
    return yield* Effect.suspend(() =>
      work.pipe(Effect.provide(layerDatabase(databasePath))),
    ).pipe(
      Effect.as(0),
      Effect.catchAll((error) =>
        error instanceof BadArgument
          ? Console.error(error.message).pipe(Effect.as(2))
          : cannotUse(databasePath, error.message),
      ),
      // Opening the file can throw (a folder, no permission).
      Effect.catchAllDefect((defect) =>
        cannotUse(
          databasePath,
          defect instanceof Error
            ? defect.message
            : Cause.pretty(Cause.die(defect)),
        ),
      ),
      // Only what the command prints: no migration or driver log lines.
      Logger.withMinimumLogLevel(LogLevel.Warning),
    )
  })
