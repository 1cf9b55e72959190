import { durationVar } from "@flymon/core/Settings"
import { Config, LogLevel } from "effect"
import { DatabasePath } from "./Database.ts"

export const BunSettings = Config.all({
  databasePath: DatabasePath,
  pollInterval: durationVar("POLL_INTERVAL", "60 seconds"),
  logLevel: Config.logLevel("LOG_LEVEL").pipe(
    Config.withDefault(LogLevel.Info),
  ),
})
