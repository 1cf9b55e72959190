import { Clock, Duration, Effect, Option } from "effect"
import { EventStore, type MachineRecord, type Run } from "./EventStore.ts"
import { FlyEvents } from "./FlyEvents.ts"
import {
  autoStopEmbed,
  autoStopRefusedEmbed,
  budgetEmbed,
  type DigestApp,
  digestEmbed,
  resolvedEmbed,
  runawayEmbed,
} from "./Notices.ts"
import { estimate, type PriceTable } from "./Pricing.ts"
import { CostSettings, maxRuntimeFor } from "./Settings.ts"
import { silencedByApp } from "./Silences.ts"

// The cost guards run after each poll, on what the store knows: machines
// running too long, the monthly budget, the daily digest and, when asked
// for, stopping machines past a hard cap. Each alert is queued as a notice
// with a key that makes it once-only, so a restart never repeats one early.

export const HOUR = 3_600_000
const DAY = 24 * HOUR
export const BUDGET_THRESHOLDS = [50, 80, 100] as const
const FORGOTTEN_AFTER = 30 * DAY
const META_AUTO_STOP_REFUSED = "auto_stop_refused_at"
export const META_BASELINE = "baseline_at"

const priceOf = (prices: PriceTable, machine: MachineRecord) =>
  estimate(prices, machine.guest, machine.region, machine.size)

/** Milliseconds of `run` inside `[from, to)`. */
export const overlap = (run: Run, from: number, to: number): number =>
  Math.max(0, Math.min(run.stoppedAt ?? to, to) - Math.max(run.startedAt, from))

/** Calendar date and hour of `at` in `timeZone`. */
export const zonedParts = (at: number, timeZone: string) => {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat("en-US", {
      timeZone,
      hourCycle: "h23",
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
    })
      .formatToParts(at)
      .map((part) => [part.type, part.value]),
  )
  return {
    year: Number(parts.year),
    month: Number(parts.month),
    day: Number(parts.day),
    hour: Number(parts.hour),
    minute: Number(parts.minute),
    second: Number(parts.second),
  }
}

/** The instant local midnight starts the given date in `timeZone`. */
export const zonedMidnight = (
  year: number,
  month: number,
  day: number,
  timeZone: string,
): number => {
  const guess = Date.UTC(year, month - 1, day)
  const local = zonedParts(guess, timeZone)
  const offset =
    Date.UTC(
      local.year,
      local.month - 1,
      local.day,
      local.hour,
      local.minute,
      local.second,
    ) - guess
  return guess - offset
}

const isoDate = (year: number, month: number, day: number) =>
  new Date(Date.UTC(year, month - 1, day)).toISOString().slice(0, 10)

const runawayAndAutoStop = (
  now: number,
  machines: ReadonlyMap<string, MachineRecord>,
) =>
  Effect.gen(function* () {
    const settings = yield* CostSettings
    const store = yield* EventStore
    const fly = yield* FlyEvents
    const remindMs = Duration.toMillis(settings.remindEvery)
    const afterMs = Duration.toMillis(settings.autoStopAfter)
    let autoStop = settings.autoStop
    if (
      autoStop === "on" &&
      (yield* store.getMeta(META_AUTO_STOP_REFUSED)) !== undefined
    )
      autoStop = "off"

    for (const run of yield* store.openRuns()) {
      const machine = machines.get(run.machineId)
      if (machine === undefined) continue
      const runningMs = now - run.startedAt
      const price = priceOf(settings.prices, machine)
      const limitMs = Duration.toMillis(maxRuntimeFor(settings, run.app))
      const due =
        runningMs >= limitMs &&
        (run.runawayAlerts === 0 ||
          now - (run.lastAlertAt ?? run.startedAt) >= remindMs)
      if (due) {
        const key = `runaway ${run.machineId} ${run.startedAt} #${run.runawayAlerts}`
        yield* store.addNotice({
          key,
          kind: "runaway",
          createdAt: now,
          silent: false,
          app: run.app,
          org: machine.org,
          embed: runawayEmbed({
            machine,
            runningMs,
            limitMs,
            price,
            reminder: run.runawayAlerts,
            key,
          }),
        })
        yield* store.updateRun(run, {
          runawayAlerts: run.runawayAlerts + 1,
          lastAlertAt: now,
        })
      }

      if (autoStop === "off" || runningMs < afterMs || run.autoStopAt !== null)
        continue
      const dryRun = autoStop === "dry-run"
      if (!dryRun) {
        // With the token of the machine's own org.
        const stopped = yield* Effect.either(
          fly
            .forOrg(machine.org)
            .pipe(
              Effect.flatMap((org) => org.stopMachine(run.app, run.machineId)),
            ),
        )
        if (stopped._tag === "Left") {
          const error = stopped.left
          if (error.reason === "Unauthorized" || error.reason === "Forbidden") {
            autoStop = "off"
            if (
              yield* store.claimMeta(META_AUTO_STOP_REFUSED, String(now), now)
            ) {
              const key = "auto-stop refused"
              yield* store.addNotice({
                key,
                kind: "auto-stop",
                createdAt: now,
                silent: false,
                embed: autoStopRefusedEmbed({ status: error.status, key }),
              })
            }
          }
          yield* Effect.logWarning("could not stop a machine").pipe(
            Effect.annotateLogs({
              app: run.app,
              machine: run.machineId,
              error: error.message,
            }),
          )
          continue
        }
      }
      const key = `${dryRun ? "would stop" : "stopped"} ${run.machineId} ${run.startedAt}`
      yield* store.addNotice({
        key,
        kind: "auto-stop",
        createdAt: now,
        silent: false,
        app: run.app,
        org: machine.org,
        embed: autoStopEmbed({
          machine,
          runningMs,
          afterMs,
          price,
          dryRun,
          key,
        }),
      })
      yield* store.updateRun(run, { autoStopAt: now })
    }

    for (const run of yield* store.unresolvedRunaways()) {
      const machine = machines.get(run.machineId)
      if (machine === undefined || run.stoppedAt === null) continue
      const key = `runaway ${run.machineId} ${run.startedAt} resolved`
      yield* store.addNotice({
        key,
        kind: "runaway",
        createdAt: now,
        silent: false,
        app: run.app,
        org: machine.org,
        embed: resolvedEmbed({
          machine,
          ranMs: run.stoppedAt - run.startedAt,
          price: priceOf(settings.prices, machine),
          key,
        }),
      })
      yield* store.updateRun(run, { resolvedAt: now })
    }
  })

/** Month-to-date estimate and a projection if what runs now keeps running. */
export const monthlySpend = (
  now: number,
  runs: ReadonlyArray<Run>,
  machines: ReadonlyMap<string, MachineRecord>,
  prices: PriceTable,
) => {
  const at = new Date(now)
  const monthStart = Date.UTC(at.getUTCFullYear(), at.getUTCMonth(), 1)
  const monthEnd = Date.UTC(at.getUTCFullYear(), at.getUTCMonth() + 1, 1)
  let monthToDate = 0
  let burnPerHour = 0
  for (const run of runs) {
    const machine = machines.get(run.machineId)
    if (machine === undefined) continue
    const hourly = priceOf(prices, machine).hourly
    monthToDate += (hourly * overlap(run, monthStart, now)) / HOUR
    if (run.stoppedAt === null) burnPerHour += hourly
  }
  return {
    month: new Date(monthStart).toISOString().slice(0, 7),
    monthStart,
    monthToDate,
    projected: monthToDate + (burnPerHour * (monthEnd - now)) / HOUR,
  }
}

const budget = (now: number, machines: ReadonlyMap<string, MachineRecord>) =>
  Effect.gen(function* () {
    const settings = yield* CostSettings
    if (Option.isNone(settings.monthlyBudget)) return
    const amount = settings.monthlyBudget.value
    const store = yield* EventStore
    const monthStart = Date.UTC(
      new Date(now).getUTCFullYear(),
      new Date(now).getUTCMonth(),
      1,
    )
    const spend = monthlySpend(
      now,
      yield* store.runsSince(monthStart),
      machines,
      settings.prices,
    )
    const worst = Math.max(spend.monthToDate, spend.projected)
    // Every threshold crossed is claimed once a month; only the highest one
    // newly crossed is announced, so a sudden jump sends one alert.
    let highest: number | undefined
    for (const threshold of BUDGET_THRESHOLDS) {
      if (worst < (amount * threshold) / 100) continue
      if (
        yield* store.claimMeta(`budget ${spend.month} ${threshold}`, "1", now)
      )
        highest = threshold
    }
    if (highest !== undefined) {
      const threshold = highest
      const key = `budget ${spend.month} ${threshold} %`
      yield* store.addNotice({
        key,
        kind: "budget",
        createdAt: now,
        silent: false,
        embed: budgetEmbed({
          threshold,
          budget: amount,
          monthToDate: spend.monthToDate,
          projected: spend.projected,
          month: spend.month,
          key,
        }),
      })
    }
  })

const digest = (now: number, machines: ReadonlyMap<string, MachineRecord>) =>
  Effect.gen(function* () {
    const settings = yield* CostSettings
    if (Option.isNone(settings.digestHour)) return
    const zone = settings.digestTimeZone
    const local = zonedParts(now, zone)
    if (local.hour < settings.digestHour.value) return
    const today = isoDate(local.year, local.month, local.day)
    const key = `digest ${today}`
    const store = yield* EventStore
    if ((yield* store.getMeta(key)) !== undefined) return
    const todayStart = zonedMidnight(local.year, local.month, local.day, zone)
    // A digest covers a day the monitor watched, at least in part.
    const watchingSince = Number((yield* store.getMeta(META_BASELINE)) ?? now)
    if (watchingSince >= todayStart) return

    const yesterday = new Date(
      Date.UTC(local.year, local.month - 1, local.day - 1),
    )
    const yesterdayStart = zonedMidnight(
      yesterday.getUTCFullYear(),
      yesterday.getUTCMonth() + 1,
      yesterday.getUTCDate(),
      zone,
    )
    const monthStart = Date.UTC(
      new Date(now).getUTCFullYear(),
      new Date(now).getUTCMonth(),
      1,
    )
    const runs = yield* store.runsSince(Math.min(monthStart, yesterdayStart))
    const apps = new Map<string, DigestApp>()
    for (const run of runs) {
      const machine = machines.get(run.machineId)
      if (machine === undefined) continue
      const hourly = priceOf(settings.prices, machine).hourly
      const yesterdayMs = overlap(run, yesterdayStart, todayStart)
      const monthMs = overlap(run, monthStart, now)
      const entry = apps.get(run.app) ?? {
        app: run.app,
        hoursYesterday: 0,
        costYesterday: 0,
        costMonth: 0,
      }
      apps.set(run.app, {
        app: run.app,
        hoursYesterday: entry.hoursYesterday + yesterdayMs / HOUR,
        costYesterday: entry.costYesterday + (hourly * yesterdayMs) / HOUR,
        costMonth: entry.costMonth + (hourly * monthMs) / HOUR,
      })
    }
    const running = runs
      .filter((run) => run.stoppedAt === null)
      .flatMap((run) => {
        const machine = machines.get(run.machineId)
        return machine === undefined
          ? []
          : [
              {
                machine,
                sinceMs: now - run.startedAt,
                hourly: priceOf(settings.prices, machine).hourly,
              },
            ]
      })
      .sort((a, b) => b.sinceMs - a.sinceMs)
    const forgotten = [...machines.values()]
      .filter(
        (m) =>
          (m.state === "stopped" || m.state === "suspended") &&
          m.lastEventAt !== null &&
          now - m.lastEventAt > FORGOTTEN_AFTER,
      )
      .map((machine) => ({
        machine,
        sinceMs: now - machine.lastEventAt!,
        hourly: priceOf(settings.prices, machine).idleHourly,
      }))
      .sort((a, b) => b.sinceMs - a.sinceMs)
    const day = isoDate(
      yesterday.getUTCFullYear(),
      yesterday.getUTCMonth() + 1,
      yesterday.getUTCDate(),
    )
    // Silenced since the previous digest, or since the day it covers began.
    const previous = yield* store.getMeta(`digest ${day}`)
    const silenced = yield* silencedByApp(
      previous === undefined ? yesterdayStart : Number(previous),
      now,
    )
    const added = yield* store.addNotice({
      key,
      kind: "digest",
      createdAt: now,
      silent: true,
      embed: digestEmbed({
        day,
        timeZone: zone,
        apps: [...apps.values()],
        running,
        forgotten,
        silenced,
        key,
      }),
    })
    if (added) yield* store.setMeta(key, String(now), now)
  })

/** Every cost guard, once, at the current time. */
export const runGuards = Effect.gen(function* () {
  const now = yield* Clock.currentTimeMillis
  const store = yield* EventStore
  const machines = yield* store.machines()
  yield* runawayAndAutoStop(now, machines)
  yield* budget(now, machines)
  yield* digest(now, machines)
}).pipe(Effect.withSpan("Guards.run"))
