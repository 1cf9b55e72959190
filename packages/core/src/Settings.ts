import { Config, ConfigError, Duration, Either, Option, Redacted } from "effect"
import { globToRegExp } from "./Glob.ts"
import {
  CONTROL_CHARACTER,
  type FlyOrgSettings,
  hasControlCharacter,
  parseFlyOrgs,
} from "./FlyOrgs.ts"
import { FLY_PRICES, withOverride } from "./Pricing.ts"
import {
  type DiscordRoute,
  isHttpUrl,
  withDefaultRoute,
  parseRoutes,
  unwatchedOrgs,
} from "./Routes.ts"
import { SilenceSettings } from "./Silences.ts"
import { StormSettings } from "./Storms.ts"
import { ThrottleSettings } from "./Throttle.ts"

export { globToRegExp }

// Every variable the core reads, in one place, so a runtime can validate
// them all at start-up and name each one that is missing or wrong.

const invalidOf = (message: string) => ConfigError.InvalidData([], message)
const invalid = (message: string) => Either.left(invalidOf(message))

const httpUrl = (name: string, options: { readonly secret: boolean }) =>
  Config.string(name).pipe(
    Config.mapOrFail((text) => {
      // An empty value (as in the shipped .env template) is a missing one.
      if (text.trim() === "")
        return Either.left(ConfigError.MissingData([], "required, but empty"))
      const ok = isHttpUrl(text.trim())
      // A webhook URL is a credential: the error must not echo it.
      return ok
        ? Either.right(text.trim().replace(/\/+$/, ""))
        : Either.left(
            ConfigError.InvalidData(
              [],
              options.secret
                ? "expected an http(s) URL (value not shown: it is a secret)"
                : `expected an http(s) URL, got "${text}"`,
            ),
          )
    }),
  )

/** A variable that is set and not blank. */
const presentVar = (name: string) =>
  Config.option(Config.string(name)).pipe(
    Config.map(Option.filter((text) => text.trim() !== "")),
  )

/**
 * The orgs to watch: `FLY_ORGS` (slug → token), or the one org of
 * `FLY_API_TOKEN` and `FLY_ORG_SLUG`. Never both: which would win is a
 * guess, and a wrong guess watches the wrong org.
 */
const flyOrgs = Config.all({
  orgs: presentVar("FLY_ORGS"),
  token: presentVar("FLY_API_TOKEN"),
  slug: presentVar("FLY_ORG_SLUG"),
}).pipe(
  Config.mapOrFail(
    ({
      orgs,
      token,
      slug,
    }): Either.Either<
      ReadonlyArray<FlyOrgSettings>,
      ConfigError.ConfigError
    > => {
      if (Option.isSome(orgs)) {
        const alsoSet = [
          ...(Option.isSome(token) ? ["FLY_API_TOKEN"] : []),
          ...(Option.isSome(slug) ? ["FLY_ORG_SLUG"] : []),
        ]
        if (alsoSet.length > 0)
          return Either.left(
            ConfigError.InvalidData(
              ["FLY_ORGS"],
              `set either FLY_ORGS or FLY_API_TOKEN with FLY_ORG_SLUG, not both; ${alsoSet.join(" and ")} ${alsoSet.length > 1 ? "are" : "is"} set too`,
            ),
          )
        return parseFlyOrgs(orgs.value).pipe(
          Either.mapLeft((message) =>
            ConfigError.InvalidData(["FLY_ORGS"], message),
          ),
        )
      }
      const problems = [
        Option.isNone(token)
          ? ConfigError.MissingData(
              ["FLY_API_TOKEN"],
              "required, or FLY_ORGS for several orgs",
            )
          : hasControlCharacter(token.value)
            ? ConfigError.InvalidData(["FLY_API_TOKEN"], CONTROL_CHARACTER)
            : undefined,
        Option.isNone(slug)
          ? ConfigError.MissingData(["FLY_ORG_SLUG"], "required")
          : undefined,
      ].filter((problem) => problem !== undefined)
      if (problems.length > 0)
        return Either.left(problems.reduce(ConfigError.And))
      return Either.right([
        {
          slug: Option.getOrThrow(slug).trim(),
          token: Redacted.make(Option.getOrThrow(token)),
        },
      ])
    },
  ),
)

export const FlySettings = Config.all({
  orgs: flyOrgs,
  baseUrl: httpUrl("FLY_API_BASE_URL", { secret: false }).pipe(
    Config.withDefault("https://api.machines.dev"),
  ),
})
export type FlySettings = Config.Config.Success<typeof FlySettings>

export const DiscordSettings = Config.all({
  webhookUrl: Config.option(
    httpUrl("DISCORD_WEBHOOK_URL", { secret: true }).pipe(
      Config.map(Redacted.make),
    ),
  ),
  routes: Config.string("DISCORD_ROUTES").pipe(
    Config.mapOrFail((text) =>
      text.trim() === ""
        ? Either.right([] as ReadonlyArray<DiscordRoute>)
        : parseRoutes(text).pipe(
            Either.mapLeft((message) => invalidOf(message)),
          ),
    ),
    Config.withDefault([] as ReadonlyArray<DiscordRoute>),
  ),
}).pipe(
  Config.mapOrFail(({ webhookUrl, routes }) =>
    withDefaultRoute(routes, Option.getOrUndefined(webhookUrl)).pipe(
      Either.map((all) => ({
        routes: all,
        /** Where alerts go that no other route claims. */
        webhookUrl: all.at(-1)!.webhook,
      })),
      Either.mapLeft((problem) =>
        problem === "missing"
          ? ConfigError.MissingData(
              ["DISCORD_WEBHOOK_URL"],
              "required, or a last route in DISCORD_ROUTES for every app",
            )
          : ConfigError.InvalidData(
              ["DISCORD_WEBHOOK_URL"],
              "not used: the last route of DISCORD_ROUTES already takes every " +
                "app; remove one of the two",
            ),
      ),
    ),
  ),
)
export type DiscordSettings = Config.Config.Success<typeof DiscordSettings>

export const DEFAULT_MONITORED_EVENTS = ["start", "stop", "exit"] as const

/** Event types Fly is known to send; a typo in MONITORED_EVENTS is caught. */
export const FLY_EVENT_TYPES: ReadonlyArray<string> = [
  "launch",
  "start",
  "stop",
  "exit",
  "restart",
  "update",
  "suspend",
  "destroy",
]

export const MonitorSettings = Config.all({
  monitoredEvents: Config.string("MONITORED_EVENTS").pipe(
    Config.mapOrFail((text) => {
      const types = text
        .split(",")
        .map((type) => type.trim().toLowerCase())
        .filter((type) => type.length > 0)
      const unknown = types.filter((type) => !FLY_EVENT_TYPES.includes(type))
      return types.length === 0
        ? invalid("expected a comma-separated list of Fly event types")
        : unknown.length > 0
          ? invalid(
              `unknown event type ${unknown.map((t) => `"${t}"`).join(", ")}; ` +
                `known: ${FLY_EVENT_TYPES.join(", ")}`,
            )
          : Either.right(types as ReadonlyArray<string>)
    }),
    Config.withDefault(DEFAULT_MONITORED_EVENTS as ReadonlyArray<string>),
  ),
})
export type MonitorSettings = Config.Config.Success<typeof MonitorSettings>

/**
 * `30 seconds`, `30s`, `5m`, `4h`, `2d`, `1500ms`. A unit is required: a
 * bare `30` could mean seconds or days, and a wrong guess silently changes
 * what the monitor does.
 */
export const parseDuration = (text: string): Duration.Duration | undefined => {
  const trimmed = text.trim().toLowerCase()
  const short = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/.exec(trimmed)
  if (short !== null) {
    const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }
    const millis = Number(short[1]) * unit[short[2] as keyof typeof unit]
    return millis > 0 ? Duration.millis(millis) : undefined
  }
  const decoded = Duration.decodeUnknown(trimmed)
  return Option.isSome(decoded) && Duration.greaterThan(decoded.value, 0)
    ? decoded.value
    : undefined
}

const OFF = /^(off|never|none)$/i

/**
 * A positive duration variable with a default; `off` where allowed, and at
 * least `atLeast` where a shorter one would quietly turn a feature off.
 */
export const durationVar = (
  name: string,
  fallback: Duration.DurationInput,
  options: {
    readonly allowOff?: boolean
    readonly atLeast?: Duration.DurationInput
  } = {},
) =>
  Config.string(name).pipe(
    Config.mapOrFail((text) => {
      if (options.allowOff && OFF.test(text.trim()))
        return Either.right(Duration.infinity)
      const duration = parseDuration(text)
      if (duration === undefined)
        return invalid(
          `expected a duration such as "60 seconds", "30s", "5m" or "4h", got "${text}"`,
        )
      return options.atLeast !== undefined &&
        Duration.lessThan(duration, options.atLeast)
        ? invalid(
            `expected at least ${Duration.format(options.atLeast)}, got "${text}"`,
          )
        : Either.right(duration)
    }),
    Config.withDefault(Duration.decode(fallback)),
  )

/** `app-glob=duration` pairs, comma-separated; first match wins. */
export interface AppOverride {
  readonly pattern: RegExp
  readonly glob: string
  readonly value: Duration.Duration
}

const appDurations = (name: string) =>
  Config.string(name).pipe(
    Config.mapOrFail((text) => {
      const overrides: Array<AppOverride> = []
      for (const pair of text.split(",").map((p) => p.trim())) {
        if (pair.length === 0) continue
        const [glob, value] = pair.split("=").map((p) => p.trim())
        const duration =
          value === undefined
            ? undefined
            : OFF.test(value)
              ? Duration.infinity
              : parseDuration(value)
        if (!glob || duration === undefined)
          return invalid(
            `expected "app-glob=duration" pairs (duration or off), got "${pair}"`,
          )
        overrides.push({ pattern: globToRegExp(glob), glob, value: duration })
      }
      return Either.right(overrides as ReadonlyArray<AppOverride>)
    }),
    Config.withDefault([] as ReadonlyArray<AppOverride>),
  )

const validTimeZone = (zone: string) => {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: zone })
    return true
  } catch {
    return false
  }
}

export const CostSettings = Config.all({
  prices: Config.string("PRICES").pipe(
    Config.mapOrFail((json) =>
      withOverride(json).pipe(
        Either.mapLeft((message) =>
          ConfigError.InvalidData(
            [],
            `expected a JSON price override: ${message}`,
          ),
        ),
      ),
    ),
    Config.withDefault(FLY_PRICES),
  ),
  maxRuntime: durationVar("MAX_RUNTIME", "4 hours", { allowOff: true }),
  maxRuntimeByApp: appDurations("MAX_RUNTIME_BY_APP"),
  remindEvery: durationVar("REMIND_EVERY", "4 hours"),
  monthlyBudget: Config.option(
    Config.number("MONTHLY_BUDGET_USD").pipe(
      Config.validate({
        message: "expected a positive amount of US dollars",
        validation: (amount) => amount > 0,
      }),
    ),
  ),
  digestHour: Config.string("DIGEST_HOUR").pipe(
    Config.mapOrFail((text) => {
      if (text.trim().toLowerCase() === "off")
        return Either.right(Option.none<number>())
      const hour = Number(text)
      return Number.isInteger(hour) && hour >= 0 && hour <= 23
        ? Either.right(Option.some(hour))
        : invalid(`expected an hour from 0 to 23, or "off", got "${text}"`)
    }),
    Config.withDefault(Option.some(9)),
  ),
  digestTimeZone: Config.string("DIGEST_TIMEZONE").pipe(
    Config.validate({
      message: "expected an IANA time zone such as Europe/Paris",
      validation: validTimeZone,
    }),
    Config.withDefault("UTC"),
  ),
  autoStop: Config.literal(
    "off",
    "dry-run",
    "on",
  )("AUTO_STOP").pipe(Config.withDefault("off" as const)),
  autoStopAfter: durationVar("AUTO_STOP_AFTER", "12 hours"),
})
export type CostSettings = Config.Config.Success<typeof CostSettings>

/** The runtime limit for machines of `app`: first matching override. */
export const maxRuntimeFor = (settings: CostSettings, app: string) =>
  settings.maxRuntimeByApp.find((o) => o.pattern.test(app))?.value ??
  settings.maxRuntime

export const RetentionSettings = Config.all({
  eventsRetention: durationVar("EVENTS_RETENTION", "30 days"),
  maxEvents: Config.integer("MAX_EVENTS").pipe(
    Config.validate({
      message: "expected a whole number of at least 1000",
      validation: (n) => n >= 1000,
    }),
    Config.withDefault(100_000),
  ),
})
export type RetentionSettings = Config.Config.Success<typeof RetentionSettings>

/** When failing passes become a Discord alert, and how often it repeats. */
export const OutageSettings = Config.all({
  alertAfter: Config.integer("FAILURE_ALERT_AFTER").pipe(
    Config.validate({
      message: "expected a whole number of at least 1",
      validation: (n) => n >= 1,
    }),
    Config.withDefault(3),
  ),
  remindEvery: durationVar("FAILURE_REMIND_EVERY", "6 hours"),
})

/** How delivery treats alerts Discord has not taken for a long time. */
export const DeliverySettings = Config.all({
  /** Older undelivered alerts are summed up in one message, not posted. */
  maxAlertAge: durationVar("MAX_ALERT_AGE", "6 hours"),
})
export type DeliverySettings = Config.Config.Success<typeof DeliverySettings>

export const CoreSettings = Config.all([
  FlySettings,
  DiscordSettings,
  MonitorSettings,
  CostSettings,
  RetentionSettings,
  OutageSettings,
  DeliverySettings,
  Config.suspend(() => SilenceSettings),
  Config.suspend(() => StormSettings),
  Config.suspend(() => ThrottleSettings),
]).pipe(
  Config.mapOrFail((settings) => {
    const [fly, discord] = settings
    const unwatched = unwatchedOrgs(
      discord.routes,
      fly.orgs.map((org) => org.slug),
    )
    return unwatched.length === 0
      ? Either.right(settings)
      : Either.left(
          ConfigError.InvalidData(
            ["DISCORD_ROUTES"],
            `${unwatched.join(", ")}, which is not watched ` +
              `(watched: ${fly.orgs.map((org) => org.slug).join(", ")})`,
          ),
        )
  }),
)

/**
 * One line per problem, each naming its variable, for a runtime to print
 * when start-up configuration is missing or invalid.
 */
export const describeConfigError = (
  error: ConfigError.ConfigError,
): ReadonlyArray<string> =>
  ConfigError.reduceWithContext(error, undefined, {
    andCase: (_, left: ReadonlyArray<string>, right: ReadonlyArray<string>) => [
      ...left,
      ...right,
    ],
    orCase: (_, left: ReadonlyArray<string>, right: ReadonlyArray<string>) => [
      ...left,
      ...right,
    ],
    invalidDataCase: (_, path, message) => [
      `${path.join(".")}: invalid: ${message}`,
    ],
    // Our own messages say what else would do ("required, or …").
    missingDataCase: (_, path, message) => [
      `${path.join(".")}: missing (${message.startsWith("required") ? message : "required"})`,
    ],
    sourceUnavailableCase: (_, path, message) => [
      `${path.join(".")}: could not be read: ${message}`,
    ],
    unsupportedCase: (_, path, message) => [
      `${path.join(".")}: unsupported: ${message}`,
    ],
  }).filter((line, index, lines) => lines.indexOf(line) === index)
