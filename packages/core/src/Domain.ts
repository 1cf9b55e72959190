import { Option, Schema } from "effect"

// Fly payloads change shape over the years: every field the monitor does not
// strictly need is optional, unknown fields are ignored, and enum-like values
// (type, status, source, state) stay plain strings.

const Timestamp = Schema.Union(Schema.Number, Schema.String)

export const ExitEvent = Schema.Struct({
  exit_code: Schema.optional(Schema.Number),
  guest_exit_code: Schema.optional(Schema.Number),
  signal: Schema.optional(Schema.Number),
  guest_signal: Schema.optional(Schema.Number),
  oom_killed: Schema.optional(Schema.Boolean),
  requested_stop: Schema.optional(Schema.Boolean),
  restarting: Schema.optional(Schema.Boolean),
  exited_at: Schema.optional(Timestamp),
  error: Schema.optional(Schema.String),
  guest_error: Schema.optional(Schema.String),
})
export type ExitEvent = typeof ExitEvent.Type

const EventRequest = Schema.Struct({
  exit_event: Schema.optional(ExitEvent),
  MonitorEvent: Schema.optional(
    Schema.Struct({ exit_event: Schema.optional(ExitEvent) }),
  ),
  restart_count: Schema.optional(Schema.Number),
})

/** What the monitor keeps of an exit: the facts a person needs to judge it. */
export interface ExitDetails {
  readonly exitCode: number | null
  readonly oomKilled: boolean
  readonly requestedStop: boolean
  readonly restartCount: number | null
  readonly error: string | null
}

const decodeRequest = Schema.decodeUnknownOption(EventRequest)

export const exitDetailsOf = (request: unknown): ExitDetails | undefined =>
  decodeRequest(request).pipe(
    Option.flatMap((req) => {
      const exit = req.MonitorEvent?.exit_event ?? req.exit_event
      if (exit === undefined) return Option.none()
      const error = exit.guest_error || exit.error
      return Option.some<ExitDetails>({
        exitCode: exit.exit_code ?? null,
        oomKilled: exit.oom_killed ?? false,
        requestedStop: exit.requested_stop ?? false,
        restartCount: req.restart_count ?? null,
        error: error ? error : null,
      })
    }),
    Option.getOrUndefined,
  )

export class MachineEvent extends Schema.Class<MachineEvent>("MachineEvent")({
  id: Schema.optional(Schema.String),
  type: Schema.String,
  status: Schema.String,
  source: Schema.optionalWith(Schema.String, { default: () => "unknown" }),
  timestamp: Schema.Number,
  request: Schema.optional(Schema.Unknown),
}) {}

export const Guest = Schema.Struct({
  cpu_kind: Schema.optional(Schema.String),
  cpus: Schema.optional(Schema.Number),
  memory_mb: Schema.optional(Schema.Number),
  gpu_kind: Schema.optional(Schema.String),
  gpus: Schema.optional(Schema.Number),
})
export type Guest = typeof Guest.Type

const MachineConfig = Schema.Struct({ guest: Schema.optional(Guest) })

export class Machine extends Schema.Class<Machine>("Machine")({
  id: Schema.String,
  name: Schema.optionalWith(Schema.String, { default: () => "" }),
  state: Schema.String,
  region: Schema.optionalWith(Schema.String, { default: () => "" }),
  config: Schema.optional(Schema.NullOr(MachineConfig)),
  incomplete_config: Schema.optional(Schema.NullOr(MachineConfig)),
  events: Schema.optionalWith(Schema.Array(MachineEvent), {
    default: () => [],
  }),
}) {
  get guest(): Guest | undefined {
    return this.config?.guest ?? this.incomplete_config?.guest
  }
  get size(): string {
    return sizeLabel(this.guest)
  }
}

export class App extends Schema.Class<App>("App")({
  name: Schema.String,
}) {}

export const ListAppsResponse = Schema.Struct({
  apps: Schema.Array(Schema.Unknown),
})

/** `shared-cpu-1x 256MB`, the way `fly machine list` names a size. */
export const sizeLabel = (guest: Guest | undefined): string => {
  if (guest === undefined || guest.cpus === undefined) return "unknown"
  const kind = guest.cpu_kind === "performance" ? "performance" : "shared-cpu"
  const memory = guest.memory_mb === undefined ? "" : ` ${guest.memory_mb}MB`
  const gpu =
    guest.gpu_kind && guest.gpus ? ` ${guest.gpus}×${guest.gpu_kind}` : ""
  return `${kind}-${guest.cpus}x${memory}${gpu}`
}

/**
 * Fly gives most events a ULID; old payloads carry none, and then the
 * machine, time and kind of the event identify it.
 */
export const eventKey = (machineId: string, event: MachineEvent): string =>
  event.id ??
  `${machineId}:${event.timestamp}:${event.type}:${event.status}:${event.source}`
