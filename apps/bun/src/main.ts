import { FetchHttpClient } from "@effect/platform"
import { BunRuntime } from "@effect/platform-bun"
import { EventStore } from "@flymon/core/EventStore"
import { FlyEvents } from "@flymon/core/FlyEvents"
import * as Metrics from "@flymon/core/Metrics"
import { describeFailure, runPassAndReport } from "@flymon/core/Outage"
import { Notifier } from "@flymon/core/Notifier"
import { RetryPolicy } from "@flymon/core/RetryPolicy"
import {
  CoreSettings,
  CostSettings,
  describeConfigError,
} from "@flymon/core/Settings"
import { status } from "@flymon/core/Status"
import { existsSync, readFileSync } from "node:fs"
import {
  Cause,
  Config,
  ConfigError,
  Console,
  Data,
  Duration,
  Effect,
  Exit,
  Layer,
  Logger,
  Option,
  Ref,
  Schedule,
} from "effect"
import { layerDatabase } from "./Database.ts"
import { initialHealth, serveMetrics } from "./MetricsServer.ts"
import { patientRetry } from "./Policy.ts"
import { BunSettings, LogFormat } from "./Settings.ts"
import { SILENCE_USAGE, silenceCommand } from "./SilenceCommand.ts"
import { renderStatus } from "./StatusTable.ts"

const USAGE = `Usage: pnpm --filter bun start [--once] [--dry-run]
       pnpm --filter bun start status
       pnpm --filter bun start silence add|list|rm ...

  --once      run one pass, then exit (0 on success, 1 if the pass failed)
  --dry-run   print the Discord messages instead of sending them
              (printed alerts count as delivered)
  status      print the running machines, their rate and the month's cost
              so far, from the database (no Fly or Discord request)
${SILENCE_USAGE}

Configuration comes from the environment, .env and .env.local; see README.md.`

class ExitCode extends Data.TaggedError("ExitCode")<{
  readonly code: number
}> {}

const parseArgs = (args: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const flags = { once: false, dryRun: false, status: false }
    for (const arg of args) {
      if (arg === "status") flags.status = true
      else if (arg === "--once") flags.once = true
      else if (arg === "--dry-run") flags.dryRun = true
      else if (arg === "--help" || arg === "-h") {
        yield* Console.log(USAGE)
        return yield* new ExitCode({ code: 0 })
      } else {
        yield* Console.error(`unknown argument: ${arg}\n\n${USAGE}`)
        return yield* new ExitCode({ code: 2 })
      }
    }
    return flags
  })

const layerServices = (databasePath: string, dryRun: boolean) =>
  Layer.mergeAll(
    FlyEvents.Default,
    EventStore.Default,
    dryRun ? Notifier.DryRun : Notifier.Default,
  ).pipe(
    // Merged: silences and storms query the database beside EventStore.
    Layer.provideMerge(
      Layer.mergeAll(
        FetchHttpClient.layer,
        RetryPolicy.layer(patientRetry),
        layerDatabase(databasePath),
      ),
    ),
  )

const reportPassFailure = (message: string) => (cause: Cause.Cause<unknown>) =>
  Effect.logError(message).pipe(
    Effect.annotateLogs(
      "error",
      Cause.isFailType(cause) && cause.error instanceof Error
        ? cause.error.message
        : Cause.pretty(cause),
    ),
  )

const configError = (error: ConfigError.ConfigError) =>
  Effect.forEach(describeConfigError(error), (line) =>
    Console.error(`configuration error: ${line}`),
  ).pipe(
    Effect.zipRight(
      Console.error(
        "Set the variables in apps/bun/.env.local (see README.md), " +
          "or try the simulated org with `pnpm demo`.",
      ),
    ),
    Effect.zipRight(new ExitCode({ code: 2 })),
  )

// PRICES_FILE names a JSON price override; PRICES, when set, wins.
const readPricesFile = Effect.sync(() => {
  const file = process.env.PRICES_FILE
  if (file === undefined || file === "" || process.env.PRICES !== undefined)
    return undefined
  try {
    process.env.PRICES = readFileSync(file, "utf8")
    return undefined
  } catch (error) {
    return `PRICES_FILE: could not be read: ${(error as Error).message}`
  }
}).pipe(
  Effect.flatMap((problem) =>
    problem === undefined
      ? Effect.void
      : Console.error(`configuration error: ${problem}`).pipe(
          Effect.zipRight(new ExitCode({ code: 2 })),
        ),
  ),
)

const printStatus = Effect.gen(function* () {
  const [, settings] = yield* Config.all([CostSettings, BunSettings]).pipe(
    Effect.catchIf(ConfigError.isConfigError, configError),
  )
  if (!existsSync(settings.databasePath)) {
    yield* Console.error(
      `no database at DATABASE_PATH=${settings.databasePath}: ` +
        "run the monitor first, or point DATABASE_PATH at its database",
    )
    return yield* new ExitCode({ code: 1 })
  }
  const report = yield* status.pipe(
    Effect.provide(
      EventStore.Default.pipe(
        Layer.provide(layerDatabase(settings.databasePath)),
      ),
    ),
    Effect.catchIf(
      (error): error is Exclude<typeof error, ExitCode> =>
        !(error instanceof ExitCode),
      (error) =>
        Console.error(`could not read the database: ${error.message}`).pipe(
          Effect.zipRight(new ExitCode({ code: 1 })),
        ),
    ),
  )
  yield* Console.log(renderStatus(report))
})

const program = Effect.gen(function* () {
  if (process.argv[2] === "silence") {
    const code = yield* silenceCommand(process.argv.slice(3))
    return code === 0 ? undefined : yield* new ExitCode({ code })
  }
  const flags = yield* parseArgs(process.argv.slice(2))
  yield* readPricesFile
  if (flags.status) return yield* printStatus
  const [, settings] = yield* Config.all([CoreSettings, BunSettings]).pipe(
    Effect.catchIf(ConfigError.isConfigError, configError),
  )
  yield* Metrics.initialize
  let passes = 0
  const health = yield* Ref.make(initialHealth)
  const pass = Effect.suspend(() => {
    passes++
    return runPassAndReport().pipe(Effect.annotateLogs("pass", passes))
  }).pipe(
    Effect.tapBoth({
      onSuccess: () =>
        Ref.update(health, (h) => ({ ...h, lastSuccessAt: Date.now() })),
      onFailure: (error) =>
        Ref.update(health, (h) => ({
          ...h,
          lastFailure: { at: Date.now(), ...describeFailure(error) },
        })),
    }),
  )
  const metrics = Option.match(settings.metricsPort, {
    onNone: () => Effect.void,
    onSome: (port) =>
      Effect.asVoid(
        serveMetrics({
          host: settings.metricsHost,
          port,
          interval: settings.pollInterval,
          health,
        }),
      ),
  })
  const work = flags.once
    ? pass.pipe(
        Effect.tapErrorCause(reportPassFailure("pass failed")),
        Effect.mapError(() => new ExitCode({ code: 1 })),
        Effect.asVoid,
      )
    : metrics.pipe(
        Effect.zipRight(
          Effect.log(
            `polling every ${Duration.format(settings.pollInterval)}; stop with Ctrl+C`,
          ),
        ),
        Effect.zipRight(
          pass.pipe(
            Effect.catchAllCause(
              reportPassFailure("pass failed; will try again next pass"),
            ),
            Effect.repeat(Schedule.spaced(settings.pollInterval)),
          ),
        ),
        Effect.asVoid,
      )
  yield* work.pipe(
    Effect.provide(layerServices(settings.databasePath, flags.dryRun)),
    Effect.catchIf(
      (error): error is Exclude<typeof error, ExitCode> =>
        !(error instanceof ExitCode),
      (error) =>
        Console.error(
          `could not start: ${
            "_tag" in error &&
            (error._tag === "SqlError" || error._tag === "MigrationError")
              ? `the database at DATABASE_PATH=${settings.databasePath}: `
              : ""
          }${String(error.message)}`,
        ).pipe(Effect.zipRight(new ExitCode({ code: 1 }))),
    ),
    // Opening the database can throw (a folder, no permission): say which.
    Effect.catchAllDefect((defect) =>
      Console.error(
        defect instanceof Error && defect.name === "SQLiteError"
          ? `could not start: the database at DATABASE_PATH=${settings.databasePath}: ${defect.message}`
          : `stopped by an unexpected error: ${String(defect)}`,
      ).pipe(Effect.zipRight(new ExitCode({ code: 1 }))),
    ),
    Logger.withMinimumLogLevel(settings.logLevel),
    Effect.scoped,
  )
})

// Chosen before the configuration is validated, so an invalid LOG_FORMAT
// falls back to "auto" here and is reported with the other variables.
const layerLogger = Layer.unwrapEffect(
  LogFormat.pipe(
    Effect.orElseSucceed(() => "auto" as const),
    Effect.map((format) =>
      format === "json" || (format === "auto" && !process.stdout.isTTY)
        ? Logger.json
        : Logger.logFmt,
    ),
  ),
)

program.pipe(
  Effect.provide(layerLogger),
  BunRuntime.runMain({
    disableErrorReporting: true,
    disablePrettyLogger: true,
    teardown: (exit, onExit) => {
      if (Exit.isSuccess(exit) || Cause.isInterruptedOnly(exit.cause))
        return onExit(0)
      const failure = Cause.failureOption(exit.cause)
      if (failure._tag === "Some" && failure.value instanceof ExitCode)
        return onExit(failure.value.code)
      console.error(Cause.pretty(exit.cause))
      onExit(1)
    },
  }),
)
