import { Schema } from "effect"

/** The meta row holding the outcome of the latest pass. */
export const LAST_PASS_KEY = "last_pass"

export const PassCounts = Schema.Struct({
  apps: Schema.Number,
  appsPolled: Schema.Number,
  machines: Schema.Number,
  running: Schema.Number,
  skippedMachines: Schema.Number,
  deferredMachines: Schema.Number,
  failedApps: Schema.Number,
  newEvents: Schema.Number,
  alertsSent: Schema.Number,
  flyRequests: Schema.Number,
  baseline: Schema.Boolean,
  durationMs: Schema.Number,
})

export const PassFailure = Schema.Struct({
  /** `FlyApiError`, `DiscordError`, `StoreError`, `ConfigError`, `Defect`. */
  kind: Schema.String,
  /** The error's reason, e.g. `Unauthorized`; no ids, no config. */
  reason: Schema.String,
  /** For operators reading D1; never served by /healthz. */
  message: Schema.String,
})

/** Outbound requests the invocation sent, and those it refused to send. */
export const SubrequestCounts = Schema.Struct({
  total: Schema.Number,
  fly: Schema.Number,
  refused: Schema.Number,
})

export class LastPass extends Schema.Class<LastPass>("LastPass")({
  finishedAt: Schema.String,
  cron: Schema.String,
  ok: Schema.Boolean,
  counts: Schema.optional(PassCounts),
  failure: Schema.optional(PassFailure),
  subrequests: Schema.optional(SubrequestCounts),
}) {}

export const LastPassJson = Schema.parseJson(LastPass)
