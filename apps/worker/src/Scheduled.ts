import { EventStore } from "@flymon/core/EventStore"
import { FlyEvents } from "@flymon/core/FlyEvents"
import type { PassSummary } from "@flymon/core/Monitor"
import { runPassAndReport } from "@flymon/core/Outage"
import { Notifier } from "@flymon/core/Notifier"
import { RetryPolicy } from "@flymon/core/RetryPolicy"
import { CoreSettings, describeConfigError } from "@flymon/core/Settings"
import {
  Cause,
  Clock,
  Config,
  ConfigError,
  Effect,
  Either,
  Exit,
  Layer,
  Logger,
  LogLevel,
  Ref,
  Schema,
} from "effect"
import {
  LAST_PASS_KEY,
  LastPass,
  LastPassJson,
  type PassFailure,
} from "./LastPass.ts"
import {
  FLY_REQUEST_BUDGET,
  FREE_PLAN_SUBREQUESTS,
  workerRetry,
} from "./Policy.ts"
import {
  layerLimitedFetch,
  noSubrequests,
  type Subrequests,
} from "./Subrequests.ts"

const LogLevelSetting = Config.logLevel("LOG_LEVEL").pipe(
  Config.withDefault(LogLevel.Info),
)

const WorkerSettings = Config.all([CoreSettings, LogLevelSetting])

/** FlyEvents and Notifier over `fetch`, within this invocation's budget. */
const layerPassServices = (flyBaseUrl: string, sent: Ref.Ref<Subrequests>) =>
  Layer.mergeAll(FlyEvents.Default, Notifier.Default).pipe(
    Layer.provide(
      layerLimitedFetch(
        {
          total: FREE_PLAN_SUBREQUESTS,
          fly: { baseUrl: flyBaseUrl, max: FLY_REQUEST_BUDGET },
        },
        sent,
      ),
    ),
    // Delivery reads the policy too: how long a persisted pause may be
    // waited out within this invocation.
    Layer.provideMerge(RetryPolicy.layer(workerRetry)),
  )

type Failure = typeof PassFailure.Type

const failureOf = (cause: Cause.Cause<unknown>): Failure => {
  const failure = Cause.failureOption(cause)
  if (failure._tag === "None")
    return {
      kind: "Defect",
      reason: Cause.isInterruptedOnly(cause) ? "Interrupted" : "Defect",
      message: Cause.pretty(cause).slice(0, 1000),
    }
  const error = failure.value
  if (ConfigError.isConfigError(error))
    return {
      kind: "ConfigError",
      reason: "InvalidConfig",
      message: describeConfigError(error).join("; "),
    }
  if (typeof error === "object" && error !== null && "_tag" in error) {
    const tagged = error as {
      _tag: string
      reason?: unknown
      operation?: unknown
      message?: unknown
    }
    return {
      kind: tagged._tag,
      reason: String(tagged.reason ?? tagged.operation ?? tagged._tag),
      message: String(tagged.message ?? ""),
    }
  }
  return { kind: "Unknown", reason: "Unknown", message: String(error) }
}

const record = (
  cron: string,
  outcome: Either.Either<PassSummary, Failure>,
  subrequests?: Subrequests,
) =>
  Effect.gen(function* () {
    const store = yield* EventStore
    const now = yield* Clock.currentTimeMillis
    const lastPass = new LastPass({
      finishedAt: new Date(now).toISOString(),
      cron,
      ok: Either.isRight(outcome),
      ...(Either.isRight(outcome)
        ? { counts: outcome.right }
        : { failure: outcome.left }),
      ...(subrequests === undefined ? {} : { subrequests }),
    })
    const json = yield* Schema.encode(LastPassJson)(lastPass).pipe(Effect.orDie)
    yield* store.setMeta(LAST_PASS_KEY, json, now)
  }).pipe(
    Effect.catchAll((error) =>
      Effect.logError("could not record the outcome of this pass").pipe(
        Effect.annotateLogs("error", error.message),
      ),
    ),
  )

/** `FLY_API_TOKEN: missing (required)` → variable and problem. */
const splitProblem = (line: string) => {
  const at = line.indexOf(": ")
  return at === -1
    ? { variable: "unknown", problem: line }
    : { variable: line.slice(0, at), problem: line.slice(at + 2) }
}

const pass = (cron: string) =>
  Effect.gen(function* () {
    const settings = yield* Effect.either(WorkerSettings)
    if (Either.isLeft(settings)) {
      const problems = describeConfigError(settings.left)
      yield* Effect.forEach(
        problems,
        (line) =>
          Effect.logError("configuration error; pass not run").pipe(
            Effect.annotateLogs(splitProblem(line)),
          ),
        { discard: true },
      )
      return yield* record(
        cron,
        Either.left({
          kind: "ConfigError",
          reason: "InvalidConfig",
          message: problems.join("; "),
        }),
      )
    }
    const [[fly]] = settings.right
    const sent = yield* Ref.make(noSubrequests)
    const exit = yield* runPassAndReport({
      flyRequestBudget: FLY_REQUEST_BUDGET,
    }).pipe(Effect.provide(layerPassServices(fly.baseUrl, sent)), Effect.exit)
    const subrequests = yield* Ref.get(sent)
    if (Exit.isFailure(exit)) {
      const failure = failureOf(exit.cause)
      yield* Effect.logError(
        "pass failed; the next cron event tries again",
      ).pipe(
        Effect.annotateLogs({ reason: failure.reason, error: failure.message }),
      )
      return yield* record(cron, Either.left(failure), subrequests)
    }
    yield* record(cron, Either.right(exit.value), subrequests)
  })

/**
 * One cron event: validate the configuration, run one budgeted pass, and
 * record its outcome for /healthz. Never fails: every failure is logged
 * and recorded instead.
 */
export const scheduledPass = (event: {
  readonly cron: string
  readonly scheduledTime: number
}) =>
  Effect.gen(function* () {
    const level = yield* LogLevelSetting.pipe(
      Effect.orElseSucceed(() => LogLevel.Info),
    )
    yield* pass(event.cron).pipe(Logger.withMinimumLogLevel(level))
  }).pipe(
    Effect.annotateLogs({
      cron: event.cron,
      scheduled_at: new Date(event.scheduledTime).toISOString(),
    }),
  )
