import type { MachineEvent } from "./Domain.ts"

// A machine costs compute while it is started. Runs are the stretches of
// time between a start and the stop, exit, suspend or destroy that ends it,
// taken from Fly's events and, where events are missing, from the state the
// listing shows.

const ENDS_A_RUN: ReadonlySet<string> = new Set([
  "exit",
  "stop",
  "suspend",
  "destroy",
])
const IDLE_STATES: ReadonlySet<string> = new Set([
  "stopped",
  "suspended",
  "destroyed",
  "failed",
])

export type RunChange =
  | { readonly _tag: "Open"; readonly at: number }
  | {
      readonly _tag: "Close"
      readonly startedAt: number
      readonly at: number
      /** The event that ended the run, when there was one. */
      readonly eventKey: string | undefined
    }

/**
 * The run changes one pass observes for a machine.
 *
 * @param open start of the run the store has open, if any
 * @param fresh events not seen before, any order
 * @param all every event Fly returned, to date a run found by state alone
 */
export const planRuns = (options: {
  readonly open: number | undefined
  readonly fresh: ReadonlyArray<MachineEvent>
  readonly all: ReadonlyArray<MachineEvent>
  readonly state: string
  readonly now: number
  readonly keyOf: (event: MachineEvent) => string
}): ReadonlyArray<RunChange> => {
  const changes: Array<RunChange> = []
  let open = options.open
  const ascending = [...options.fresh].sort((a, b) => a.timestamp - b.timestamp)
  for (const event of ascending) {
    if (event.type === "start" && open === undefined) {
      open = event.timestamp
      changes.push({ _tag: "Open", at: open })
    } else if (ENDS_A_RUN.has(event.type) && open !== undefined) {
      changes.push({
        _tag: "Close",
        startedAt: open,
        at: Math.max(open, event.timestamp),
        eventKey: options.keyOf(event),
      })
      open = undefined
    }
  }
  if (options.state === "started" && open === undefined) {
    // Running, but no start was seen: date it from the newest start Fly
    // still shows, if nothing ended it since; else from now.
    const latest = (types: (type: string) => boolean) =>
      Math.max(
        -1,
        ...options.all
          .filter((event) => types(event.type))
          .map((event) => event.timestamp),
      )
    const start = latest((type) => type === "start")
    const end = latest((type) => ENDS_A_RUN.has(type))
    const at = start > end && start <= options.now ? start : options.now
    changes.push({ _tag: "Open", at })
  } else if (IDLE_STATES.has(options.state) && open !== undefined) {
    changes.push({
      _tag: "Close",
      startedAt: open,
      at: options.now,
      eventKey: undefined,
    })
  }
  return changes
}
