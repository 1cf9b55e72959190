import { Clock, Effect } from "effect"
import { EventStore } from "./EventStore.ts"
import { HOUR, monthlySpend, overlap } from "./Guards.ts"
import { estimate } from "./Pricing.ts"
import { CostSettings } from "./Settings.ts"

export interface RunningMachine {
  readonly app: string
  readonly machineId: string
  readonly name: string
  readonly region: string
  readonly size: string
  readonly startedAt: string
  readonly runningHours: number
  readonly hourlyUsd: number
  readonly monthToDateUsd: number
  readonly estimated: boolean
}

export interface Status {
  readonly at: string
  readonly month: string
  readonly running: ReadonlyArray<RunningMachine>
  readonly monthToDateUsd: number
  readonly projectedUsd: number
  readonly budgetUsd: number | null
}

/**
 * What runs now and what the month has cost so far, from the store alone:
 * no Fly or Discord request.
 */
export const status = Effect.gen(function* () {
  const now = yield* Clock.currentTimeMillis
  const store = yield* EventStore
  const settings = yield* CostSettings
  const machines = yield* store.machines()
  const monthStart = Date.UTC(
    new Date(now).getUTCFullYear(),
    new Date(now).getUTCMonth(),
    1,
  )
  const monthRuns = yield* store.runsSince(monthStart)
  const spend = monthlySpend(now, monthRuns, machines, settings.prices)
  const running = monthRuns
    .filter((run) => run.stoppedAt === null)
    .flatMap((run): Array<RunningMachine> => {
      const machine = machines.get(run.machineId)
      if (machine === undefined) return []
      const price = estimate(
        settings.prices,
        machine.guest,
        machine.region,
        machine.size,
      )
      const monthMs = monthRuns
        .filter((r) => r.machineId === run.machineId)
        .reduce((sum, r) => sum + overlap(r, spend.monthStart, now), 0)
      return [
        {
          app: machine.app,
          machineId: machine.id,
          name: machine.name,
          region: machine.region,
          size: machine.size,
          startedAt: new Date(run.startedAt).toISOString(),
          runningHours: (now - run.startedAt) / HOUR,
          hourlyUsd: price.hourly,
          monthToDateUsd: (price.hourly * monthMs) / HOUR,
          estimated: !price.exact,
        },
      ]
    })
    .sort((a, b) => b.runningHours - a.runningHours)
  return {
    at: new Date(now).toISOString(),
    month: spend.month,
    running,
    monthToDateUsd: spend.monthToDate,
    projectedUsd: spend.projected,
    budgetUsd:
      settings.monthlyBudget._tag === "Some"
        ? settings.monthlyBudget.value
        : null,
  } satisfies Status
})
