import type { PendingEvent } from "./EventStore.ts"
import { estimate, humanDuration, type PriceTable, usd } from "./Pricing.ts"

// Discord's documented limits, counted in code points. A small margin keeps
// us clear of any difference in how Discord counts.
export const Limits = {
  content: 2000,
  embedsPerMessage: 10,
  title: 256,
  description: 4096,
  fields: 25,
  fieldName: 256,
  fieldValue: 1024,
  footer: 2048,
  authorName: 256,
  totalPerMessage: 6000,
  margin: 100,
} as const

export const USERNAME = "Fly Machine Monitor"

/** Message flag: delivered without a notification sound or badge. */
export const SUPPRESS_NOTIFICATIONS = 1 << 12

export interface EmbedField {
  readonly name: string
  readonly value: string
  readonly inline?: boolean
}

export interface Embed {
  readonly title: string
  readonly description?: string
  readonly color: number
  readonly fields: ReadonlyArray<EmbedField>
  readonly footer: { readonly text: string }
  readonly timestamp?: string
}

export interface DiscordPayload {
  readonly username: string
  readonly content?: string
  readonly embeds?: ReadonlyArray<Embed>
  readonly allowed_mentions: { readonly parse: ReadonlyArray<never> }
  readonly flags?: number
}

/** Cuts `text` to at most `max` code points, marking the cut with "…". */
export const truncate = (text: string, max: number): string => {
  const points = Array.from(text)
  return points.length <= max
    ? text
    : points.slice(0, Math.max(0, max - 1)).join("") + "…"
}

const length = (text: string | undefined) =>
  text === undefined ? 0 : Array.from(text).length

/**
 * Makes text from Fly (machine names, app names, error strings) render as
 * itself: markdown is escaped, and a zero-width space after every `@` keeps
 * `@everyone`/`@here` inert even if `allowed_mentions` were ever dropped.
 */
export const escapeMarkdown = (text: string): string =>
  text
    .replace(/[\\*_~`|>#[\]()<:-]/g, (char) => `\\${char}`)
    .replace(/@/g, "@\u200b")
    .replace(/[\r\n]+/g, " ")

/**
 * Inline code for identifiers: backticks cannot be escaped inside it, and
 * it is cut inside the span so a later cut cannot leave it open.
 */
export const code = (text: string, max = 100): string =>
  text.trim().length === 0
    ? "–"
    : `\`${truncate(text.replace(/`/g, "'").replace(/[\r\n]+/g, " "), max)}\``

// Discord rejects a field that is blank after trimming; Fly strings can be.
const safe = (text: string, max: number) =>
  text.trim().length === 0 ? "–" : truncate(escapeMarkdown(text), max)

const Colors = {
  started: 0x2ecc71,
  stopped: 0x95a5a6,
  crashed: 0xe74c3c,
  other: 0x3498db,
} as const

const headline = (event: PendingEvent): { title: string; color: number } => {
  const exit = event.exit
  if (event.type === "exit" && exit !== undefined) {
    if (exit.oomKilled)
      return { title: "exited: out of memory", color: Colors.crashed }
    if (exit.requestedStop) return { title: "stopped", color: Colors.stopped }
    if (exit.exitCode !== null && exit.exitCode !== 0)
      return {
        title: `crashed with exit code ${exit.exitCode}`,
        color: Colors.crashed,
      }
    return { title: "exited", color: Colors.stopped }
  }
  if (event.type === "start") return { title: "started", color: Colors.started }
  if (event.type === "stop") return { title: "stopped", color: Colors.stopped }
  return {
    title: `${escapeMarkdown(event.type)} (${escapeMarkdown(event.status)})`,
    color: Colors.other,
  }
}

const yesNo = (value: boolean) => (value ? "yes" : "no")

const exitSummary = (event: PendingEvent): string | undefined => {
  const exit = event.exit
  if (exit === undefined) return undefined
  const parts = [
    `code ${exit.exitCode ?? "unknown"}`,
    `OOM ${yesNo(exit.oomKilled)}`,
    `requested stop ${yesNo(exit.requestedStop)}`,
  ]
  if (exit.restartCount !== null) parts.push(`restarts ${exit.restartCount}`)
  return parts.join(" · ")
}

const costField = (
  event: PendingEvent,
  prices: PriceTable,
): EmbedField | undefined => {
  const price = estimate(prices, event.guest, event.region, event.size)
  // The caveat can quote a region or GPU name from Fly.
  const caveat =
    price.caveat === undefined ? "" : ` (${escapeMarkdown(price.caveat)})`
  if (event.ranMs !== undefined)
    return {
      name: "Run",
      value: truncate(
        `ran ${humanDuration(event.ranMs)} · ≈ ${usd(
          (price.hourly * event.ranMs) / 3_600_000,
        )}${caveat}`,
        Limits.fieldValue,
      ),
    }
  if (event.type === "start")
    return {
      name: "Cost",
      value: truncate(
        `≈ ${usd(price.hourly)}/h while started${caveat}`,
        Limits.fieldValue,
      ),
    }
  return undefined
}

export interface EmbedOptions {
  /** Name the Fly org next to the app (several orgs are watched). */
  readonly showOrg?: boolean
}

const appField = (event: PendingEvent, options: EmbedOptions): EmbedField => ({
  name: "App",
  value:
    options.showOrg && event.org !== undefined
      ? `${safe(event.app, 200)} (org ${code(event.org, 60)})`
      : safe(event.app, 200),
  inline: true,
})

/** App, machine, region and size: what every event embed starts with. */
const machineFields = (
  event: PendingEvent,
  options: EmbedOptions,
): Array<EmbedField> => [
  appField(event, options),
  {
    name: "Machine",
    value: truncate(
      `${safe(event.machineName, 120)} ${code(event.machineId)}`,
      Limits.fieldValue,
    ),
    inline: true,
  },
  { name: "Region", value: safe(event.region, 40), inline: true },
  { name: "Size", value: safe(event.size, 80), inline: true },
]

/** The embed announcing one billing-relevant event. */
export const eventEmbed = (
  event: PendingEvent,
  prices: PriceTable,
  options: EmbedOptions = {},
): Embed => {
  const { title, color } = headline(event)
  const who = event.machineName || event.machineId
  const seconds = Math.floor(event.timestamp / 1000)
  const fields: Array<EmbedField> = [
    ...machineFields(event, options),
    {
      name: "Event",
      value: `${safe(event.type, 60)} / ${safe(event.status, 60)}`,
      inline: true,
    },
    { name: "Requested by", value: safe(event.source, 60), inline: true },
  ]
  const exit = exitSummary(event)
  if (exit !== undefined) fields.push({ name: "Exit", value: exit })
  if (event.exit?.error)
    fields.push({ name: "Error", value: safe(event.exit.error, 500) })
  const cost = costField(event, prices)
  if (cost !== undefined) fields.push(cost)
  fields.push({ name: "When", value: `<t:${seconds}:f> (<t:${seconds}:R>)` })
  return {
    title: truncate(`${escapeMarkdown(who)} ${title}`, Limits.title),
    color,
    fields,
    footer: { text: truncate(`event ${event.key}`, 200) },
    timestamp: new Date(event.timestamp).toISOString(),
  }
}

/** Events of one machine that share an embed, at most. */
export const EVENTS_PER_EMBED = 10

const eventLine = (event: PendingEvent, prices: PriceTable): string => {
  const parts = [
    `<t:${Math.floor(event.timestamp / 1000)}:T> **${headline(event).title}**`,
  ]
  if (event.source.trim() !== "")
    parts.push(`by ${truncate(escapeMarkdown(event.source), 40)}`)
  if (event.exit?.error)
    parts.push(truncate(escapeMarkdown(event.exit.error), 120))
  const cost = costField(event, prices)
  if (cost !== undefined) parts.push(cost.value)
  return parts.join(" · ")
}

/**
 * One embed for several events of one machine (oldest first), a line each:
 * a machine that started and stopped between two passes is one alert.
 */
export const machineEmbed = (
  events: ReadonlyArray<PendingEvent>,
  prices: PriceTable,
  options: EmbedOptions = {},
): Embed => {
  if (events.length === 1) return eventEmbed(events[0]!, prices, options)
  const latest = events.at(-1)!
  const who = latest.machineName || latest.machineId
  const crashed = events.some(
    (event) => headline(event).color === Colors.crashed,
  )
  const budget = Limits.description - Limits.margin
  let description = ""
  for (const line of events.map((event) => eventLine(event, prices))) {
    const next = description === "" ? line : `${description}\n${line}`
    description =
      Array.from(next).length > budget ? truncate(next, budget) : next
  }
  return {
    title: truncate(
      `${escapeMarkdown(who)}: ${events.length} events, ${headline(latest).title} last`,
      Limits.title,
    ),
    description,
    color: crashed ? Colors.crashed : headline(latest).color,
    fields: machineFields(latest, options),
    footer: {
      text: truncate(
        `events ${events.map((event) => event.key).join(" ")}`,
        Limits.footer,
      ),
    },
    timestamp: new Date(latest.timestamp).toISOString(),
  }
}

/** The event keys an alert embed's footer names (`event k` or `events k1 k2`). */
export const footerKeys = (footer: string): ReadonlyArray<string> => {
  const match = /^events? (.+)$/.exec(footer)
  return match === null ? [] : match[1]!.split(" ")
}

export const embedLength = (embed: Embed): number =>
  length(embed.title) +
  length(embed.description) +
  length(embed.footer.text) +
  embed.fields.reduce(
    (sum, field) => sum + length(field.name) + length(field.value),
    0,
  )

export const payload = (
  parts: Omit<DiscordPayload, "username" | "allowed_mentions">,
): DiscordPayload => ({
  username: USERNAME,
  allowed_mentions: { parse: [] },
  ...parts,
})

/**
 * Packs embeds into as few messages as Discord allows: at most 10 embeds
 * and 6 000 characters each. Returns, per message, the indexes it carries.
 */
export const pack = (
  embeds: ReadonlyArray<Embed>,
): ReadonlyArray<ReadonlyArray<number>> => {
  const budget = Limits.totalPerMessage - Limits.margin
  const messages: Array<Array<number>> = []
  let current: Array<number> = []
  let used = 0
  embeds.forEach((embed, index) => {
    const size = embedLength(embed)
    if (
      current.length === Limits.embedsPerMessage ||
      (current.length > 0 && used + size > budget)
    ) {
      messages.push(current)
      current = []
      used = 0
    }
    current.push(index)
    used += size
  })
  if (current.length > 0) messages.push(current)
  return messages
}

export interface WatchCounts {
  readonly org: string
  readonly apps: number
  /** Apps listed so far: fewer than `apps` under a request budget. */
  readonly appsPolled: number
  readonly machines: number
  readonly running: number
  /** The event types that get an alert. */
  readonly monitored: ReadonlyArray<string>
}

const listed = (words: ReadonlyArray<string>) =>
  words.length <= 1
    ? words.join("")
    : `${words.slice(0, -1).join(", ")} and ${words.at(-1)}`

const plural = (count: number, word: string) =>
  `${count} ${word}${count === 1 ? "" : "s"}`

/** Sent once, on the first pass over an empty store, instead of history. */
export const watchingMessage = (counts: WatchCounts): DiscordPayload =>
  payload({
    content: truncate(
      `Now watching org ${code(counts.org)}: ${plural(counts.apps, "app")}` +
        (counts.appsPolled < counts.apps
          ? ` (${counts.appsPolled} listed so far)`
          : "") +
        `, ${plural(counts.machines, "machine")}, ${counts.running} running. ` +
        `Machine ${listed(counts.monitored.map(escapeMarkdown))} events ` +
        "from now on will be posted here.",
      Limits.content,
    ),
  })
