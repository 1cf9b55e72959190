import {
  eventEmbed,
  pack,
  payload,
  watchingMessage,
  type DiscordPayload,
} from "@flymon/core/DiscordMessage"
import { Machine } from "@flymon/core/Domain"
import { toNewEvent } from "@flymon/core/Monitor"
import type { PendingEvent } from "@flymon/core/EventStore"
import { FLY_PRICES } from "@flymon/core/Pricing"
import { DEFAULT_MONITORED_EVENTS } from "@flymon/core/Settings"
import { validateWebhookBody } from "@flymon/testkit/DiscordValidation"
import { Either, Schema } from "effect"
import fc from "fast-check"
import { assert, describe, it } from "vitest"

// Arbitrary Fly machine payloads through the real decode path and the real
// message builders: nothing throws, Discord would accept every message, and
// no text Fly controls can mention anyone.

const RUNS = 10_000
const SEED = 20261203
const decodeMachine = Schema.decodeUnknownEither(Machine)

/** Cases run back to back before the event loop gets a turn. */
const CASES_PER_TURN = 100

/**
 * Asserts `property` over RUNS cases from SEED. Each property is an async
 * one whose predicate hands the event loop a turn every CASES_PER_TURN
 * cases: 10 000 cases in one synchronous stretch take long enough to starve
 * the RPC between the vitest worker and its parent ("Timeout calling
 * onTaskUpdate"). The cases are the ones the synchronous property draws
 * from the same seed.
 */
const assertProperty = <Ts>(
  property: (turn: () => Promise<void> | undefined) => fc.IAsyncProperty<Ts>,
) => {
  let cases = 0
  const turn = () =>
    ++cases % CASES_PER_TURN === 0
      ? new Promise<void>((resolve) => setImmediate(resolve))
      : undefined
  return fc.assert(property(turn), { numRuns: RUNS, seed: SEED })
}

/** Text built to break escaping: mentions, markdown, odd Unicode. */
const hostile = fc.string({
  unit: fc.constantFrom(
    "@",
    "everyone",
    "here",
    "<@",
    "<@&",
    "<#",
    "<@!",
    ">",
    "123456789012345678",
    "`",
    "``",
    "\\",
    "*",
    "_",
    "~",
    "|",
    ":",
    "-",
    "#",
    "[x](http://a)",
    "\n",
    "\r",
    "\u200b",
    "\u0301",
    "😀",
    "👩‍👩‍👧",
    "é",
    " ",
    "a",
  ),
  maxLength: 40,
})

/** Any text Fly might send: hostile, any Unicode, sometimes very long. */
const text = fc.oneof(
  { weight: 4, arbitrary: hostile },
  { weight: 2, arbitrary: fc.string({ unit: "binary", maxLength: 60 }) },
  { weight: 1, arbitrary: fc.string({ unit: "grapheme", maxLength: 60 }) },
  {
    weight: 1,
    arbitrary: fc
      .tuple(hostile, fc.integer({ min: 200, max: 3000 }))
      .map(([piece, times]) => (piece || "@").repeat(times).slice(0, 6000)),
  },
)

/** Text Discord would not trim to nothing (see the blank-field row). */
const nonBlank = text.filter(
  (value) => value.length === 0 || value.replace(/[\r\n]+/g, " ").trim() !== "",
)

/** A number Fly might send where one is expected, or not a number at all. */
const number = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: -1, max: 256 }) },
  { weight: 1, arbitrary: fc.double({ noNaN: true, noDefaultInfinity: true }) },
  { weight: 1, arbitrary: fc.constantFrom(null, "1", true, {}) },
)

/** Event times: recent milliseconds, mostly; anything JSON holds, rarely. */
const timestamp = fc.oneof(
  { weight: 8, arbitrary: fc.integer({ min: 1.6e12, max: 1.9e12 }) },
  {
    weight: 1,
    arbitrary: fc.integer({ min: -8.64e15, max: 8.64e15 }),
  },
)

/** Fly's machine ids: 14 hex digits. */
const flyId = fc.stringMatching(/^[0-9a-f]{14}$/)
/** Fly region codes: three letters. */
const flyRegion = fc.stringMatching(/^[a-z]{3}$/)
/** GPU kinds Fly offers. */
const flyGpu = fc.constantFrom(
  "a10",
  "l40s",
  "a100-pcie-40gb",
  "a100-sxm4-80gb",
)

interface Shape {
  /** Machine ids. */
  readonly id: fc.Arbitrary<string>
  /** Every other string Fly sends. */
  readonly text: fc.Arbitrary<string>
  readonly gpuKind: fc.Arbitrary<string>
  readonly region: fc.Arbitrary<string>
}

/** A list of machine payloads, mostly machine-shaped, some anything. */
const flyPayloads = (shape: Shape) => {
  const { text } = shape
  const exitEvent = fc.record(
    {
      exit_code: number,
      guest_exit_code: number,
      oom_killed: fc.oneof(fc.boolean(), number),
      requested_stop: fc.boolean(),
      restarting: fc.boolean(),
      error: text,
      guest_error: text,
      exited_at: fc.oneof(text, timestamp),
    },
    { requiredKeys: [] },
  )
  const request = fc.oneof(
    fc.record(
      {
        exit_event: exitEvent,
        MonitorEvent: fc.record(
          { exit_event: exitEvent },
          { requiredKeys: [] },
        ),
        restart_count: number,
      },
      { requiredKeys: [] },
    ),
    fc.constant({}),
    fc.anything(),
  )
  const event = fc.record(
    {
      id: fc.oneof(text, fc.ulid()),
      type: fc.oneof(
        { weight: 5, arbitrary: fc.constantFrom("start", "stop", "exit") },
        { weight: 1, arbitrary: text },
      ),
      status: text,
      source: text,
      timestamp,
      request,
    },
    { requiredKeys: ["type", "status", "timestamp"] },
  )
  const guest = fc.record(
    {
      cpu_kind: fc.oneof(fc.constantFrom("shared", "performance"), text),
      cpus: number,
      memory_mb: number,
      gpu_kind: shape.gpuKind,
      gpus: number,
    },
    { requiredKeys: [] },
  )
  const machine = fc.record(
    {
      id: shape.id,
      name: text,
      state: fc.oneof(fc.constantFrom("started", "stopped", "destroyed"), text),
      region: shape.region,
      config: fc.oneof(fc.constant(null), fc.record({ guest })),
      incomplete_config: fc.oneof(fc.constant(null), fc.record({ guest })),
      events: fc.array(
        fc.oneof({ weight: 9, arbitrary: event }, fc.anything()),
        { maxLength: 12 },
      ),
    },
    { requiredKeys: ["id", "state"] },
  )
  return fc.array(
    fc.oneof(
      { weight: 8, arbitrary: machine },
      { weight: 1, arbitrary: fc.anything() },
      { weight: 1, arbitrary: fc.jsonValue() },
    ),
    { minLength: 1, maxLength: 4 },
  )
}

const monitored: ReadonlySet<string> = new Set(DEFAULT_MONITORED_EVENTS)

/** What the pass stores for delivery: only the monitored event types. */
const pendingEvents = (
  app: string,
  machine: Machine,
  ranMs: number | undefined,
): ReadonlyArray<PendingEvent> =>
  machine.events
    .filter((event) => monitored.has(event.type))
    .map((event) => ({
      ...toNewEvent(app, machine, event, ranMs),
      machineName: machine.name,
      region: machine.region,
      size: machine.size,
      guest: machine.guest,
    }))

const MENTION_MARKERS = ["<@&", "<@", "<#"]

/**
 * True when `value` holds a mention Discord would render: `@everyone` or
 * `@here`, or `<@`, `<@&`, `<#` not escaped by an odd run of backslashes,
 * outside a well-formed inline code span.
 */
export const unescapedMention = (value: string): string | undefined => {
  const outsideCode = value.replace(/(?<!\\)`[^`]*`/g, "")
  const everyone = /@(everyone|here)/.exec(outsideCode)
  if (everyone !== null) return everyone[0]
  for (const marker of MENTION_MARKERS) {
    let at = outsideCode.indexOf(marker)
    while (at !== -1) {
      let slashes = 0
      while (outsideCode[at - 1 - slashes] === "\\") slashes++
      if (slashes % 2 === 0)
        return outsideCode.slice(Math.max(0, at - 10), at + 12)
      at = outsideCode.indexOf(marker, at + 1)
    }
  }
  return undefined
}

/**
 * Every text Discord renders with markdown: content, titles, descriptions,
 * field names and values. Footers are plain text in Discord (no markdown,
 * no mentions), so the event key there is not checked.
 */
const renderedTexts = (body: DiscordPayload) => [
  ...(body.content === undefined ? [] : [["content", body.content]]),
  ...(body.embeds ?? []).flatMap((embed, i) => [
    [`embeds[${i}].title`, embed.title],
    ...(embed.description === undefined
      ? []
      : [[`embeds[${i}].description`, embed.description]]),
    ...embed.fields.flatMap((field, j) => [
      [`embeds[${i}].fields[${j}].name`, field.name],
      [`embeds[${i}].fields[${j}].value`, field.value],
    ]),
  ]),
]

/** Throws when Discord would refuse `body`. */
const checkLimits = (body: DiscordPayload) => {
  const refused = validateWebhookBody(JSON.parse(JSON.stringify(body)))
  if (refused !== undefined)
    throw new Error(`Discord would refuse it: ${JSON.stringify(refused)}`)
}

/** Throws when `body` can render a mention. */
const checkMentions = (body: DiscordPayload) => {
  for (const [where, value] of renderedTexts(body)) {
    const mention = unescapedMention(value!)
    if (mention !== undefined)
      throw new Error(
        `unescaped mention in ${where}: ${JSON.stringify(mention)}`,
      )
  }
}

interface Variant extends Shape {
  /** Give every exit event its exit details (Fly always sends them). */
  readonly exitDetails: boolean
  readonly check: (body: DiscordPayload) => void
}

/** Fly always sends exit details; a bare exit takes another title path. */
const withExitDetails = (raw: unknown): unknown => {
  if (typeof raw !== "object" || raw === null || !("events" in raw)) return raw
  const events = Array.isArray(raw.events)
    ? raw.events.map((event: unknown) =>
        typeof event === "object" && event !== null && "type" in event
          ? event.type === "exit"
            ? { ...event, request: { exit_event: { exit_code: 1 } } }
            : event
          : event,
      )
    : raw.events
  return { ...raw, events }
}

const machinesProperty = async (variant: Variant) => {
  let decoded = 0
  let embeds = 0
  await assertProperty((turn) =>
    fc.asyncProperty(
      flyPayloads(variant),
      variant.text,
      fc.option(fc.nat(), { nil: undefined }),
      async (raws, app, ranMs) => {
        const pending = raws.flatMap((generated) => {
          // What arrives is JSON: no undefined, NaN or Infinity.
          const json: unknown = JSON.parse(JSON.stringify(generated) ?? "null")
          const raw = variant.exitDetails ? withExitDetails(json) : json
          const machine = decodeMachine(raw)
          if (Either.isLeft(machine)) return []
          decoded++
          return pendingEvents(app, machine.right, ranMs)
        })
        const built = pending.map((event) => eventEmbed(event, FLY_PRICES))
        embeds += built.length
        for (const message of pack(built))
          variant.check(payload({ embeds: message.map((i) => built[i]!) }))
        await turn()
      },
    ),
  )
  return { decoded, embeds }
}

const watchingProperty = (
  org: fc.Arbitrary<string>,
  check: (body: DiscordPayload) => void,
) =>
  assertProperty((turn) =>
    fc.asyncProperty(
      org,
      fc.nat(),
      fc.nat(),
      fc.nat(),
      fc.nat(),
      async (slug, apps, polled, machines, running) => {
        check(
          watchingMessage({
            org: slug,
            apps,
            appsPolled: Math.min(polled, apps),
            machines,
            running,
            monitored: [slug, "start"],
          }),
        )
        await turn()
      },
    ),
  )

/** Org slugs as Fly allows them are short; the check still uses hostile text. */
const shortText = text.filter((slug) => slug.length <= 100)

describe("fuzz", () => {
  it("the mention check itself", () => {
    assert.strictEqual(
      unescapedMention("@\u200beveryone \\<@1> `<@2>`"),
      undefined,
    )
    assert.isDefined(unescapedMention("hi @here"))
    assert.isDefined(unescapedMention("\\\\<@1>"))
    assert.isDefined(unescapedMention("`<@1>"))
  })

  it(`${RUNS} Fly machine payloads, any id: no crash, within Discord's limits`, async () => {
    const { decoded, embeds } = await machinesProperty({
      id: fc.oneof(flyId, text),
      text: nonBlank,
      gpuKind: text,
      region: nonBlank,
      exitDetails: false,
      check: checkLimits,
    })
    console.log(
      `FIGURES fuzz: runs=${RUNS} machines_decoded=${decoded} embeds=${embeds}`,
    )
  })

  it("a blank source or region: Discord accepts the alert", async () => {
    await machinesProperty({
      id: flyId,
      text,
      gpuKind: flyGpu,
      region: text,
      exitDetails: true,
      check: checkLimits,
    })
  })

  it(`${RUNS} Fly machine payloads, Fly-shaped ids, regions, GPU kinds and exits: no mention`, async () => {
    await machinesProperty({
      id: flyId,
      text,
      gpuKind: flyGpu,
      region: flyRegion,
      exitDetails: true,
      check: checkMentions,
    })
  })

  it("an exit without exit details: no mention", async () => {
    await machinesProperty({
      id: flyId,
      text,
      gpuKind: flyGpu,
      region: flyRegion,
      exitDetails: false,
      check: checkMentions,
    })
  })

  it("any region or gpu_kind: no mention", async () => {
    await machinesProperty({
      id: flyId,
      text,
      gpuKind: text,
      region: text,
      exitDetails: true,
      check: checkMentions,
    })
  })

  it("a machine id of any length: no mention", async () => {
    await machinesProperty({
      id: fc.oneof(flyId, text),
      text,
      gpuKind: flyGpu,
      region: flyRegion,
      exitDetails: true,
      check: checkMentions,
    })
  })

  it(`${RUNS} "Now watching" messages, any org slug: within Discord's limits`, async () => {
    await watchingProperty(text, checkLimits)
  })

  it(`${RUNS} "Now watching" messages, slugs up to 100 chars: no mention`, async () => {
    await watchingProperty(shortText, checkMentions)
  })

  it('"Now watching" with a slug of any length: no mention', async () => {
    await watchingProperty(text, checkMentions)
  })
})
