import { durationVar } from "@flymon/core/Settings"
import { Config, LogLevel } from "effect"
import { DatabasePath } from "./Database.ts"

/** logfmt for people at a terminal, JSON lines for log collectors. */
export const LogFormat = Config.literal(
  "auto",
  "logfmt",
  "json",
)("LOG_FORMAT").pipe(Config.withDefault("auto" as const))

export const BunSettings = Config.all({
  databasePath: DatabasePath,
  metricsPort: Config.option(
    Config.port("METRICS_PORT").pipe(
      Config.validate({
        message: "expected a port from 1 to 65535",
        validation: (port) => port > 0,
      }),
    ),
  ),
  metricsHost: Config.string("METRICS_HOST").pipe(
    Config.withDefault("127.0.0.1"),
  ),
  pollInterval: durationVar("POLL_INTERVAL", "60 seconds"),
  logLevel: Config.logLevel("LOG_LEVEL").pipe(
    Config.withDefault(LogLevel.Info),
  ),
})
