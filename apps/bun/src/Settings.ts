import { Config, ConfigError, Duration, Either, LogLevel } from "effect"
import { DatabasePath } from "./Database.ts"

/**
 * `30 seconds`, `30s`, `5m`, `1h`, `1500ms`; a bare number is seconds.
 */
export const parseInterval = (text: string): Duration.Duration | undefined => {
  const trimmed = text.trim().toLowerCase()
  const short = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(trimmed)
  if (short !== null) {
    const value = Number(short[1])
    const unit = short[2] ?? "s"
    const millis =
      unit === "ms"
        ? value
        : unit === "s"
          ? value * 1000
          : unit === "m"
            ? value * 60_000
            : value * 3_600_000
    return millis > 0 ? Duration.millis(millis) : undefined
  }
  const decoded = Duration.decodeUnknown(trimmed)
  return decoded._tag === "Some" && Duration.greaterThan(decoded.value, 0)
    ? decoded.value
    : undefined
}

export const PollInterval = Config.string("POLL_INTERVAL").pipe(
  Config.mapOrFail((text) => {
    const interval = parseInterval(text)
    return interval === undefined
      ? Either.left(
          ConfigError.InvalidData(
            [],
            `expected a duration such as "60 seconds", "30s" or "5m", got "${text}"`,
          ),
        )
      : Either.right(interval)
  }),
  Config.withDefault(Duration.seconds(60)),
)

export const BunSettings = Config.all({
  databasePath: DatabasePath,
  pollInterval: PollInterval,
  logLevel: Config.logLevel("LOG_LEVEL").pipe(
    Config.withDefault(LogLevel.Info),
  ),
})
