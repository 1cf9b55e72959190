import { Config, ConfigError, Either, Redacted } from "effect"

// Every variable the core reads, in one place, so a runtime can validate
// them all at start-up and name each one that is missing or wrong.

const httpUrl = (name: string, options: { readonly secret: boolean }) =>
  Config.string(name).pipe(
    Config.mapOrFail((text) => {
      const ok = (() => {
        try {
          const url = new URL(text.trim())
          return url.protocol === "http:" || url.protocol === "https:"
        } catch {
          return false
        }
      })()
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

export const FlySettings = Config.all({
  token: Config.redacted(Config.nonEmptyString("FLY_API_TOKEN")),
  orgSlug: Config.nonEmptyString("FLY_ORG_SLUG"),
  baseUrl: httpUrl("FLY_API_BASE_URL", { secret: false }).pipe(
    Config.withDefault("https://api.machines.dev"),
  ),
})
export type FlySettings = Config.Config.Success<typeof FlySettings>

export const DiscordSettings = Config.all({
  webhookUrl: httpUrl("DISCORD_WEBHOOK_URL", { secret: true }).pipe(
    Config.map(Redacted.make),
  ),
})
export type DiscordSettings = Config.Config.Success<typeof DiscordSettings>

export const DEFAULT_MONITORED_EVENTS = ["start", "stop", "exit"] as const

export const MonitorSettings = Config.all({
  monitoredEvents: Config.string("MONITORED_EVENTS").pipe(
    Config.withDefault(DEFAULT_MONITORED_EVENTS.join(",")),
    Config.map((text) =>
      text
        .split(",")
        .map((type) => type.trim().toLowerCase())
        .filter((type) => type.length > 0),
    ),
    Config.validate({
      message: "expected a comma-separated list of Fly event types",
      validation: (types) => types.length > 0,
    }),
  ),
})
export type MonitorSettings = Config.Config.Success<typeof MonitorSettings>

export const CoreSettings = Config.all([
  FlySettings,
  DiscordSettings,
  MonitorSettings,
])

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
    missingDataCase: (_, path) => [`${path.join(".")}: missing (required)`],
    sourceUnavailableCase: (_, path, message) => [
      `${path.join(".")}: could not be read: ${message}`,
    ],
    unsupportedCase: (_, path, message) => [
      `${path.join(".")}: unsupported: ${message}`,
    ],
  }).filter((line, index, lines) => lines.indexOf(line) === index)
