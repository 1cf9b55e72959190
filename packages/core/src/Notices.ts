import {
  code,
  type Embed,
  escapeMarkdown,
  Limits,
  truncate,
} from "./DiscordMessage.ts"
import type { MachineRecord } from "./EventStore.ts"
import { type Estimate, humanDuration, usd } from "./Pricing.ts"

// Embeds for alerts about cost rather than one Fly event. Fly strings are
// escaped exactly as in event alerts.

const Colors = {
  warning: 0xf39c12,
  danger: 0xe74c3c,
  resolved: 0x2ecc71,
  info: 0x3498db,
} as const

const who = (machine: MachineRecord) =>
  truncate(escapeMarkdown(machine.name || machine.id), 100)

const machineLine = (machine: MachineRecord) =>
  truncate(
    `${who(machine)} ${code(machine.id)} · ${escapeMarkdown(machine.app)} · ` +
      `${escapeMarkdown(machine.region)} · ${escapeMarkdown(machine.size)}`,
    Limits.fieldValue,
  )

const costLine = (price: Estimate, hours: number) =>
  `≈ ${usd(price.hourly * hours)} so far at ≈ ${usd(price.hourly)}/h` +
  (price.caveat === undefined ? "" : ` (${escapeMarkdown(price.caveat)})`)

export const runawayEmbed = (options: {
  readonly machine: MachineRecord
  readonly runningMs: number
  readonly limitMs: number
  readonly price: Estimate
  readonly reminder: number
  readonly key: string
}): Embed => ({
  title: truncate(
    `${who(options.machine)} has been running for ${humanDuration(options.runningMs)}` +
      (options.reminder > 0 ? " (still running)" : ""),
    Limits.title,
  ),
  color: options.reminder > 0 ? Colors.danger : Colors.warning,
  fields: [
    { name: "Machine", value: machineLine(options.machine) },
    {
      name: "Cost",
      value: truncate(
        costLine(options.price, options.runningMs / 3_600_000),
        Limits.fieldValue,
      ),
    },
    {
      name: "Limit",
      value: `running longer than ${humanDuration(options.limitMs)} (MAX_RUNTIME)`,
    },
  ],
  footer: { text: options.key },
})

export const resolvedEmbed = (options: {
  readonly machine: MachineRecord
  readonly ranMs: number
  readonly price: Estimate
  readonly key: string
}): Embed => ({
  title: truncate(
    `${who(options.machine)} stopped after ${humanDuration(options.ranMs)}, ` +
      `≈ ${usd((options.price.hourly * options.ranMs) / 3_600_000)}`,
    Limits.title,
  ),
  color: Colors.resolved,
  fields: [{ name: "Machine", value: machineLine(options.machine) }],
  footer: { text: options.key },
})

export const budgetEmbed = (options: {
  readonly threshold: number
  readonly budget: number
  readonly monthToDate: number
  readonly projected: number
  readonly month: string
  readonly key: string
}): Embed => {
  const reached =
    options.monthToDate >= (options.budget * options.threshold) / 100
  return {
    title: reached
      ? `Fly spend reached ${options.threshold} % of the monthly budget`
      : `Fly spend is on course for ${options.threshold} % of the monthly budget`,
    color: options.threshold >= 100 ? Colors.danger : Colors.warning,
    fields: [
      { name: "Month", value: options.month, inline: true },
      { name: "Budget", value: usd(options.budget), inline: true },
      {
        name: "Month to date",
        value: `≈ ${usd(options.monthToDate)} (${Math.round(
          (options.monthToDate / options.budget) * 100,
        )} %)`,
        inline: true,
      },
      {
        name: "Projected",
        value: `≈ ${usd(options.projected)} by month end if what runs now keeps running`,
      },
    ],
    footer: {
      text: `${options.key} · machine compute only; volumes, IPs and bandwidth are not seen`,
    },
  }
}

export const autoStopEmbed = (options: {
  readonly machine: MachineRecord
  readonly runningMs: number
  readonly afterMs: number
  readonly price: Estimate
  readonly dryRun: boolean
  readonly key: string
}): Embed => ({
  title: truncate(
    options.dryRun
      ? `Would stop ${who(options.machine)} (AUTO_STOP=dry-run)`
      : `Stopped ${who(options.machine)} (AUTO_STOP=on)`,
    Limits.title,
  ),
  color: options.dryRun ? Colors.info : Colors.danger,
  fields: [
    { name: "Machine", value: machineLine(options.machine) },
    {
      name: "Why",
      value: `running for ${humanDuration(options.runningMs)}, longer than AUTO_STOP_AFTER (${humanDuration(options.afterMs)})`,
    },
    {
      name: "Cost",
      value: truncate(
        costLine(options.price, options.runningMs / 3_600_000),
        Limits.fieldValue,
      ),
    },
  ],
  footer: { text: options.key },
})

export const autoStopRefusedEmbed = (options: {
  readonly status: number | undefined
  readonly key: string
}): Embed => ({
  title: "AUTO_STOP is on, but the Fly token may not stop machines",
  color: Colors.warning,
  description:
    `Fly refused a stop request${options.status === undefined ? "" : ` (HTTP ${options.status})`}. ` +
    "The monitor will only alert from now on. To let it stop machines, give " +
    "it a token with deploy rights (fly tokens create deploy) or set AUTO_STOP=off.",
  fields: [],
  footer: { text: options.key },
})

export interface DigestApp {
  readonly app: string
  readonly hoursYesterday: number
  readonly costYesterday: number
  readonly costMonth: number
}

export interface DigestMachine {
  readonly machine: MachineRecord
  readonly sinceMs: number
  readonly hourly: number
}

const listWithin = (lines: ReadonlyArray<string>, max: number) => {
  const kept: Array<string> = []
  let used = 0
  for (const [index, line] of lines.entries()) {
    const rest = lines.length - index
    const more = `… and ${rest} more`
    if (used + line.length + 1 + more.length + 1 > max) {
      kept.push(more)
      break
    }
    kept.push(line)
    used += line.length + 1
  }
  return kept.length === 0 ? "none" : kept.join("\n")
}

/** Alerts about an app that silences settled since the previous digest. */
export interface DigestSilenced {
  readonly app: string
  readonly events: number
}

export const digestEmbed = (options: {
  readonly day: string
  readonly timeZone: string
  readonly apps: ReadonlyArray<DigestApp>
  readonly running: ReadonlyArray<DigestMachine>
  readonly forgotten: ReadonlyArray<DigestMachine>
  readonly silenced?: ReadonlyArray<DigestSilenced>
  readonly key: string
}): Embed => {
  const totalYesterday = options.apps.reduce((s, a) => s + a.costYesterday, 0)
  const totalMonth = options.apps.reduce((s, a) => s + a.costMonth, 0)
  const apps = options.apps
    .filter((a) => a.costMonth > 0 || a.hoursYesterday > 0)
    .sort((a, b) => b.costMonth - a.costMonth)
    .map(
      (a) =>
        `${escapeMarkdown(a.app)}: ${a.hoursYesterday.toFixed(1)} machine-hours, ` +
        `≈ ${usd(a.costYesterday)} yesterday · ≈ ${usd(a.costMonth)} this month`,
    )
  const running = options.running.map(
    (m) =>
      `${who(m.machine)} (${escapeMarkdown(m.machine.app)}) for ` +
      `${humanDuration(m.sinceMs)} at ≈ ${usd(m.hourly)}/h`,
  )
  const forgotten = options.forgotten.map(
    (m) =>
      `${who(m.machine)} (${escapeMarkdown(m.machine.app)}) stopped for ` +
      `${humanDuration(m.sinceMs)}, rootfs still billed`,
  )
  const silenced = (options.silenced ?? []).map(
    (s) =>
      `${escapeMarkdown(s.app)}: ${s.events} ${s.events === 1 ? "event" : "events"}`,
  )
  return {
    title: `Daily Fly cost digest for ${options.day} (${options.timeZone})`,
    color: Colors.info,
    description: truncate(
      `Yesterday ≈ ${usd(totalYesterday)} · month to date ≈ ${usd(totalMonth)} ` +
        "(machine compute, estimated)",
      Limits.description,
    ),
    fields: [
      { name: "By app", value: listWithin(apps, Limits.fieldValue) },
      { name: "Running now", value: listWithin(running, Limits.fieldValue) },
      {
        name: "Stopped for more than 30 days",
        value: listWithin(forgotten, Limits.fieldValue),
      },
      ...(silenced.length === 0
        ? []
        : [
            {
              name: "Silenced since the previous digest",
              value: listWithin(silenced, Limits.fieldValue),
            },
          ]),
    ],
    footer: { text: options.key },
  }
}
