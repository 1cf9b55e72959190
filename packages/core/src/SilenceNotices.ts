import {
  code,
  type Embed,
  escapeMarkdown,
  Limits,
  truncate,
} from "./DiscordMessage.ts"
import type { SilenceRow } from "./SilenceTable.ts"
import { describeTarget, type Silence } from "./Silences.ts"

// The note queued when a silence ends: what it held back, by type.

const Colors = { ended: 0x95a5a6 } as const

const plural = (n: number, one: string, many: string) =>
  `${n} ${n === 1 ? one : many}`

export const silenceEndedEmbed = (options: {
  readonly silence: Silence
  readonly counts: ReadonlyMap<string, number>
  readonly how: string
  readonly key: string
}): Embed => {
  const { silence } = options
  const total = [...options.counts.values()].reduce((a, b) => a + b, 0)
  const target =
    silence.target._tag === "App"
      ? `app ${code(silence.target.glob)}`
      : `machine ${code(silence.target.id)}`
  return {
    title: truncate(
      `Silence on ${escapeMarkdown(describeTarget(silence.target))} ended: ` +
        `${plural(total, "event was", "events were")} silenced`,
      Limits.title,
    ),
    color: Colors.ended,
    fields: [
      {
        name: "Silenced",
        value: truncate(
          [...options.counts]
            .sort(([a], [b]) => a.localeCompare(b))
            .map(([type, n]) => `${escapeMarkdown(type)} ${n}`)
            .join(" · "),
          Limits.fieldValue,
        ),
      },
      {
        name: "Silence",
        value: truncate(
          `${target} until <t:${Math.floor(silence.until / 1000)}:f> · ${options.how}`,
          Limits.fieldValue,
        ),
      },
      ...(silence.reason === undefined
        ? []
        : [
            {
              name: "Reason",
              value: truncate(
                escapeMarkdown(silence.reason),
                Limits.fieldValue,
              ),
            },
          ]),
    ],
    footer: { text: truncate(options.key, 200) },
  }
}

/** How a silence ended, for its note. */
export const endedHow = (row: SilenceRow) =>
  row.removed_at === null
    ? "expired"
    : row.source === "cli"
      ? "removed with silence rm"
      : "removed from SILENCES"
