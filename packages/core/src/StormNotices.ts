import {
  code,
  type Embed,
  type EmbedField,
  escapeMarkdown,
  Limits,
  truncate,
} from "./DiscordMessage.ts"
import type { MachineRecord } from "./EventStore.ts"
import { humanDuration } from "./Pricing.ts"
import type { StormRow, StormStats } from "./StormTable.ts"

// The three notices of a restart storm: its start, its updates, its end.
// Fly strings are escaped exactly as in event alerts.

const Colors = { storm: 0xe74c3c, update: 0xf39c12, calm: 0x2ecc71 } as const

interface About {
  readonly storm: StormRow
  readonly machine: MachineRecord | undefined
  readonly stats: StormStats
}

const who = ({ storm, machine }: About) =>
  truncate(escapeMarkdown(machine?.name || storm.machine_id), 100)

const placeFields = ({ storm, machine }: About): Array<EmbedField> => [
  {
    name: "App",
    value:
      storm.app.trim() === "" ? "–" : truncate(escapeMarkdown(storm.app), 200),
    inline: true,
  },
  {
    name: "Machine",
    value: truncate(
      `${escapeMarkdown(machine?.name ?? "")} ${code(storm.machine_id)}`.trim(),
      Limits.fieldValue,
    ),
    inline: true,
  },
]

const plural = (count: number, word: string) =>
  `${count} ${word}${count === 1 ? "" : "s"}`

const events = (count: number) => plural(count, "start/exit event")

const when = (at: number) => `<t:${Math.floor(at / 1000)}:f>`

const exitCodes = ({ stats }: About): EmbedField => {
  const codes = stats.codes
    .map(
      (exit) =>
        `${exit.exit_code ?? "unknown"}${exit.oom_killed === 1 ? " (OOM)" : ""}`,
    )
    .join(" · ")
  const oom =
    stats.ooms > 0
      ? `\n${stats.ooms} of ${plural(stats.exits, "exit")} out of memory`
      : ""
  return {
    name: "Last exit codes, oldest first",
    value: codes === "" ? "no exit seen" : codes + oom,
  }
}

export const stormEmbed = (
  about: About & {
    /** The machine's price while started, if known. */
    readonly hourly: string | undefined
    readonly windowMs: number
    readonly updateMs: number
  },
): Embed => {
  const { storm, stats } = about
  return {
    title: truncate(`${who(about)} is in a restart storm`, Limits.title),
    color: Colors.storm,
    fields: [
      ...placeFields(about),
      {
        name: "Events",
        value:
          `${events(stats.events)} in ` +
          `${humanDuration(stats.last - storm.started_at)}, ` +
          `since ${when(storm.started_at)}`,
      },
      exitCodes(about),
      ...(about.hourly === undefined
        ? []
        : [{ name: "Cost", value: about.hourly }]),
      {
        name: "From now on",
        value:
          "Its start, stop and exit events are folded into this storm" +
          (Number.isFinite(about.updateMs)
            ? `, with an update every ${humanDuration(about.updateMs)} at ` +
              "most (STORM_UPDATE_EVERY)"
            : " without updates (STORM_UPDATE_EVERY=off)") +
          `, until ${humanDuration(about.windowMs)} pass without a start ` +
          "or exit (STORM_WINDOW).",
      },
    ],
    footer: { text: storm.key },
  }
}

export const stormUpdateEmbed = (
  about: About & { readonly key: string; readonly now: number },
): Embed => {
  const { storm, stats } = about
  return {
    title: truncate(`${who(about)} is still in a restart storm`, Limits.title),
    color: Colors.update,
    fields: [
      ...placeFields(about),
      {
        name: "Since the last update",
        value: events(stats.events - storm.reported),
      },
      {
        name: "Lasting",
        value:
          `${humanDuration(about.now - storm.started_at)} so far, ` +
          `${events(stats.events)} in all`,
      },
      exitCodes(about),
    ],
    footer: { text: about.key },
  }
}

export const calmEmbed = (
  about: About & { readonly key: string; readonly windowMs: number },
): Embed => {
  const { storm, stats, machine } = about
  const unreported = stats.events - storm.reported
  return {
    title: truncate(`${who(about)} has calmed down`, Limits.title),
    color: Colors.calm,
    fields: [
      ...placeFields(about),
      {
        name: "Storm",
        value:
          `${events(stats.events)} over ` +
          `${humanDuration(stats.last - storm.started_at)}, ` +
          `${when(storm.started_at)} to ${when(stats.last)}` +
          (unreported > 0 ? `; ${unreported} since the last update` : ""),
      },
      exitCodes(about),
      {
        name: "State now",
        value:
          machine === undefined || machine.state.trim() === ""
            ? "unknown"
            : truncate(escapeMarkdown(machine.state), 100),
      },
      {
        name: "From now on",
        value:
          `No start or exit for ${humanDuration(about.windowMs)} ` +
          "(STORM_WINDOW): its events are announced one by one again.",
      },
    ],
    footer: { text: about.key },
  }
}
