import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import type { FakeDiscord } from "@flymon/testkit/FakeDiscord"
import type { FakeFly } from "@flymon/testkit/FakeFly"
import { Effect, Either, TestClock } from "effect"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { EventStore } from "../src/EventStore.ts"
import { runPass } from "../src/Monitor.ts"
import { CoreSettings, describeConfigError } from "../src/Settings.ts"
import {
  configId,
  parseInstant,
  parseSilences,
  SilenceSettings,
} from "../src/Silences.ts"
import {
  envFor,
  fakesAt,
  layerEnv,
  layerMonitor,
  layerSqliteAt,
} from "./support.ts"

// Silences on simulated time: the TestClock drives the monitor and the fake
// Fly dates its events from the same clock. One event per machine per pass,
// so every announced event is an embed of its own.

const MINUTE = 60_000
const HOUR = 60 * MINUTE
const T0 = Date.UTC(2026, 11, 1, 0, 0)

let now = 0
const at = (ms: number) =>
  Effect.gen(function* () {
    now = ms
    yield* TestClock.setTime(ms)
  })

const STAGING = configId({ _tag: "App", glob: "staging-*" })
const P2 = configId({ _tag: "Machine", id: "p2" })

const tempDb = () =>
  join(mkdtempSync(join(tmpdir(), "flymon-silences-")), "m.db")

const monitorOn = (
  fly: FakeFly,
  discord: FakeDiscord,
  file: string,
  env: Record<string, string>,
) =>
  layerMonitor(
    { ...envFor(fly, discord), MAX_RUNTIME: "90d", ...env },
    undefined,
    layerSqliteAt(file),
  )

type EmbedJson = {
  title: string
  color: number
  fields: Array<{ name: string; value: string }>
  footer: { text: string }
}

const embeds = (discord: FakeDiscord): Array<EmbedJson> =>
  discord.messages.flatMap((m) => (m.embeds ?? []) as Array<EmbedJson>)

const titlesFrom = (discord: FakeDiscord, from: number) =>
  embeds(discord)
    .slice(from)
    .map((embed) => embed.title)

const query = <A extends object>(file: string, statement: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    return (yield* sql.unsafe(statement)) as ReadonlyArray<A>
  }).pipe(Effect.provide(layerSqliteAt(file)))

const notice = (key: string, app: string, createdAt: number) =>
  Effect.gen(function* () {
    const store = yield* EventStore
    yield* store.addNotice({
      key,
      kind: "runaway",
      createdAt,
      silent: false,
      app,
      embed: {
        title: `${key} is running`,
        color: 0,
        fields: [],
        footer: { text: key },
      },
    })
  })

describe("silences from SILENCES on simulated time", () => {
  it.scoped(
    "fold and count what they mute, note their end once, and feed the digest",
    () =>
      Effect.gen(function* () {
        yield* at(T0)
        const { fly, discord } = yield* fakesAt(() => now)
        fly.addApp("staging-web")
        fly.addApp("prod-web")
        fly.addMachine("staging-web", { id: "s1", name: "st", region: "iad" })
        fly.addMachine("prod-web", { id: "p1", name: "pa", region: "iad" })
        fly.addMachine("prod-web", { id: "p2", name: "pb", region: "iad" })
        const file = tempDb()
        const layer = monitorOn(fly, discord, file, {
          DIGEST_HOUR: "9",
          SILENCES: JSON.stringify([
            {
              app: "staging-*",
              until: "2026-12-01T06:00Z",
              reason: "load test @everyone [x](https://evil.example)",
            },
            { machine: "p2", until: "2026-12-01T03:00:00+00:00" },
          ]),
        })
        const pass = runPass.pipe(Effect.provide(layer))

        yield* pass
        yield* at(T0 + MINUTE)
        const s1Start = fly.start("s1")
        const p1Start = fly.start("p1")
        const p2Start = fly.start("p2")
        yield* pass
        assert.deepStrictEqual(titlesFrom(discord, 0), ["pa started"])

        yield* at(T0 + 2 * HOUR)
        const s1Exit = fly.exit("s1", { exitCode: 1 })
        yield* notice("runaway staging", "staging-web", now).pipe(
          Effect.provide(layer),
        )
        yield* notice("runaway prod", "prod-web", now).pipe(
          Effect.provide(layer),
        )
        yield* pass
        assert.deepStrictEqual(titlesFrom(discord, 1), [
          "runaway prod is running",
        ])

        // p2's silence ended at 03:00: its exit is announced, then the note.
        yield* at(T0 + 3 * HOUR + MINUTE)
        const p2Exit = fly.exit("p2", { requestedStop: true })
        yield* pass
        // staging-*'s ended at 06:00.
        yield* at(T0 + 6 * HOUR + MINUTE)
        const s1Again = fly.start("s1")
        yield* pass
        yield* at(T0 + 7 * HOUR)
        yield* pass
        assert.deepStrictEqual(titlesFrom(discord, 2), [
          "pb stopped",
          "Silence on machine p2 ended: 1 event was silenced",
          "st started",
          "Silence on app staging\\-\\* ended: 3 events were silenced",
        ])
        const ended = embeds(discord).at(-1)!
        assert.deepStrictEqual(ended, {
          title: "Silence on app staging\\-\\* ended: 3 events were silenced",
          color: 0x95a5a6,
          fields: [
            { name: "Silenced", value: "exit 1 · runaway 1 · start 1" },
            {
              name: "Silence",
              value: `app \`staging-*\` until <t:${(T0 + 6 * HOUR) / 1000}:f> · expired`,
            },
            {
              name: "Reason",
              value:
                "load test @\u200beveryone \\[x\\]\\(https\\://evil.example\\)",
            },
          ],
          footer: { text: `silence ${STAGING} ${T0 + 6 * HOUR} ended` },
        })

        const rows = yield* query<{ key: string }>(
          file,
          `SELECT key, machine_id, type, folded_into, notified_at,
             delivery_error FROM events WHERE baseline = 0
           ORDER BY timestamp, key`,
        )
        const row = (
          event: { id?: string },
          machine: string,
          type: string,
          foldedInto: string | null,
          notifiedAt: number,
        ) => ({
          key: event.id!,
          machine_id: machine,
          type,
          folded_into: foldedInto,
          notified_at: notifiedAt,
          delivery_error: null,
        })
        assert.deepStrictEqual(
          [...rows].sort((a, b) => a.key.localeCompare(b.key)),
          [
            row(s1Start, "s1", "start", `silence:${STAGING}`, T0 + MINUTE),
            row(p1Start, "p1", "start", null, T0 + MINUTE),
            row(p2Start, "p2", "start", `silence:${P2}`, T0 + MINUTE),
            row(s1Exit, "s1", "exit", `silence:${STAGING}`, T0 + 2 * HOUR),
            row(p2Exit, "p2", "exit", null, T0 + 3 * HOUR + MINUTE),
            row(s1Again, "s1", "start", null, T0 + 6 * HOUR + MINUTE),
          ].sort((a, b) => a.key.localeCompare(b.key)),
        )
        assert.deepStrictEqual(
          yield* query(
            file,
            `SELECT key, app, notified_at, delivery_error FROM notices
             ORDER BY created_at, key`,
          ),
          [
            {
              key: "runaway prod",
              app: "prod-web",
              notified_at: T0 + 2 * HOUR,
              delivery_error: null,
            },
            {
              key: "runaway staging",
              app: "staging-web",
              notified_at: T0 + 2 * HOUR,
              delivery_error: `silenced (silence:${STAGING})`,
            },
            {
              key: `silence ${P2} ${T0 + 3 * HOUR} ended`,
              app: null,
              notified_at: T0 + 3 * HOUR + MINUTE,
              delivery_error: null,
            },
            {
              key: `silence ${STAGING} ${T0 + 6 * HOUR} ended`,
              app: null,
              notified_at: T0 + 6 * HOUR + MINUTE,
              delivery_error: null,
            },
          ],
        )
        assert.deepStrictEqual(
          yield* query(
            file,
            `SELECT id, source, app, machine_id, ends_at, created_at,
               removed_at, ended_at FROM silences ORDER BY id`,
          ),
          [
            {
              id: STAGING,
              source: "config",
              app: "staging-*",
              machine_id: null,
              ends_at: T0 + 6 * HOUR,
              created_at: T0,
              removed_at: null,
              ended_at: T0 + 6 * HOUR + MINUTE,
            },
            {
              id: P2,
              source: "config",
              app: null,
              machine_id: "p2",
              ends_at: T0 + 3 * HOUR,
              created_at: T0,
              removed_at: null,
              ended_at: T0 + 3 * HOUR + MINUTE,
            },
          ].sort((a, b) => a.id.localeCompare(b.id)),
        )

        // The digest of Dec 1 (sent Dec 2, 09:00 UTC) counts them per app;
        // the next one has nothing silenced since.
        const before = embeds(discord).length
        for (const day of [2, 3]) {
          yield* at(Date.UTC(2026, 11, day, 9, 0))
          yield* pass
        }
        const digests = embeds(discord).slice(before)
        assert.deepStrictEqual(
          digests.map((d) => d.title),
          [
            "Daily Fly cost digest for 2026-12-01 (UTC)",
            "Daily Fly cost digest for 2026-12-02 (UTC)",
          ],
        )
        assert.deepStrictEqual(digests[0]!.fields.at(-1), {
          name: "Silenced since the previous digest",
          value: "prod\\-web: 1 event\nstaging\\-web: 3 events",
        })
        assert.deepStrictEqual(
          digests[1]!.fields.map((f) => f.name),
          ["By app", "Running now", "Stopped for more than 30 days"],
        )
      }),
  )

  it.scoped(
    "an entry taken out of SILENCES ends at once; none is noted if it muted nothing",
    () =>
      Effect.gen(function* () {
        yield* at(T0)
        const { fly, discord } = yield* fakesAt(() => now)
        fly.addApp("staging-api")
        fly.addMachine("staging-api", { id: "a1", name: "api", region: "iad" })
        const file = tempDb()
        const muted = JSON.stringify([
          { app: "staging-*", until: "2027-01-01T00:00Z" },
          { app: "nothing-*", until: "2027-01-01T00:00Z" },
        ])
        const passWith = (silences: string) =>
          runPass.pipe(
            Effect.provide(
              monitorOn(fly, discord, file, {
                DIGEST_HOUR: "off",
                SILENCES: silences,
              }),
            ),
          )
        yield* passWith(muted)
        yield* at(T0 + MINUTE)
        fly.start("a1")
        yield* passWith(muted)
        assert.deepStrictEqual(titlesFrom(discord, 0), [])

        yield* at(T0 + 2 * MINUTE)
        fly.exit("a1", { exitCode: 0 })
        // A restart without the entries: a blank SILENCES is none.
        yield* passWith(" ")
        yield* at(T0 + 3 * MINUTE)
        yield* passWith(" ")
        assert.deepStrictEqual(titlesFrom(discord, 0), [
          "api exited",
          "Silence on app staging\\-\\* ended: 1 event was silenced",
        ])
        assert.strictEqual(
          embeds(discord)[1]!.fields[1]!.value,
          "app `staging-*` until <t:1798761600:f> · removed from SILENCES",
        )
        assert.deepStrictEqual(
          yield* query(
            file,
            "SELECT id, removed_at, ended_at FROM silences ORDER BY app",
          ),
          [
            {
              id: configId({ _tag: "App", glob: "nothing-*" }),
              removed_at: T0 + 2 * MINUTE,
              ended_at: T0 + 2 * MINUTE,
            },
            {
              id: configId({ _tag: "App", glob: "staging-*" }),
              removed_at: T0 + 2 * MINUTE,
              ended_at: T0 + 2 * MINUTE,
            },
          ],
        )
      }),
  )
})

describe("SILENCES", () => {
  const problem = (value: string) =>
    Effect.gen(function* () {
      const result = yield* Effect.either(CoreSettings)
      assert.isTrue(Either.isLeft(result))
      return describeConfigError(
        (result as Either.Left<never, never>).left,
      ).filter((line) => line.startsWith("SILENCES"))
    }).pipe(
      Effect.provide(
        layerEnv({
          FLY_API_TOKEN: "x",
          FLY_ORG_SLUG: "acme",
          DISCORD_WEBHOOK_URL: "http://127.0.0.1:9/api/webhooks/1/t",
          SILENCES: value,
        }),
      ),
    )

  it.effect("names the variable and says what is wrong", () =>
    Effect.gen(function* () {
      const example =
        '[{"app":"staging-*","until":"2026-12-24T00:00Z","reason":"load test"}]'
      const cases: Array<[string, string]> = [
        ["[{app:", `not valid JSON; expected an array such as ${example}`],
        ['{"app":"x"}', `expected a JSON array such as ${example}`],
        [
          '[{"app":"a","until":"2026-12-24T00:00Z","untill":"x"}]',
          'entry 1: unknown key "untill"; allowed: app, machine, until, reason',
        ],
        [
          '[{"app":"a","until":"2026-12-24T00:00Z"},{"machine":"m1"}]',
          'entry 2: "until" is missing; give an ISO date-time such as 2026-12-24T00:00Z',
        ],
        [
          '[{"app":"a","until":"2026-12-24"}]',
          'entry 1: "until" "2026-12-24" is not an ISO date-time with a time zone, such as 2026-12-24T00:00Z',
        ],
        [
          '[{"app":"a","until":"2026-02-30T10:00Z"}]',
          'entry 1: "until" "2026-02-30T10:00Z" is not an ISO date-time with a time zone, such as 2026-12-24T00:00Z',
        ],
        [
          '[{"app":"a","machine":"m1","until":"2026-12-24T00:00Z"}]',
          'entry 1: give exactly one of "app" (a glob such as staging-*) or "machine" (a machine id)',
        ],
        [
          '[{"machine":"web-*","until":"2026-12-24T00:00Z"}]',
          'entry 1: "machine" is a machine id, matched exactly; for a glob use "app" (machine names are not matched)',
        ],
        [
          '[{"app":"","until":"2026-12-24T00:00Z"}]',
          'entry 1: "app" must be a non-empty string',
        ],
        [
          '[{"app":"a","until":"2026-12-24T00:00Z","reason":7}]',
          'entry 1: "reason" must be a string',
        ],
        [
          '[{"app":"a*","until":"2026-12-24T00:00Z"},{"app":"a*","until":"2027-01-01T00:00Z"}]',
          "entries 1 and 2 both silence app a*",
        ],
        [
          "[3]",
          'entry 1: expected an object with "app" or "machine", and "until"',
        ],
      ]
      for (const [value, message] of cases)
        assert.deepStrictEqual(yield* problem(value), [
          `SILENCES: invalid: ${message}`,
        ])
    }),
  )

  it.effect("reads entries with their instants and stable ids", () =>
    Effect.gen(function* () {
      const settings = yield* SilenceSettings.pipe(
        Effect.provide(
          layerEnv({
            SILENCES:
              '[{"machine":"148e123","until":"2026-12-05T10:00Z"},' +
              '{"app":"web-?","until":"2026-12-05T11:30:00.5+01:30","reason":" deploy "}]',
          }),
        ),
      )
      assert.deepStrictEqual(settings.silences, [
        {
          id: configId({ _tag: "Machine", id: "148e123" }),
          source: "config",
          target: { _tag: "Machine", id: "148e123" },
          until: Date.UTC(2026, 11, 5, 10, 0),
          reason: undefined,
        },
        {
          id: configId({ _tag: "App", glob: "web-?" }),
          source: "config",
          target: { _tag: "App", glob: "web-?" },
          until: Date.UTC(2026, 11, 5, 10, 0, 0, 500),
          reason: "deploy",
        },
      ])
      assert.match(settings.silences[0]!.id, /^c-[0-9a-f]{8}$/)
      assert.notStrictEqual(settings.silences[0]!.id, settings.silences[1]!.id)
      assert.deepStrictEqual(
        yield* SilenceSettings.pipe(Effect.provide(layerEnv({}))),
        { silences: [] },
      )
    }),
  )

  it("parses instants strictly", () => {
    assert.strictEqual(
      parseInstant("2026-12-04T10:00Z"),
      Date.UTC(2026, 11, 4, 10),
    )
    assert.strictEqual(
      parseInstant("2026-12-04t09:00:00-01:00"),
      Date.UTC(2026, 11, 4, 10),
    )
    assert.strictEqual(parseInstant("2028-02-29T00:00Z"), Date.UTC(2028, 1, 29))
    for (const text of [
      "2026-12-04T10:00",
      "2026-12-04",
      "2027-02-29T00:00Z",
      "2026-12-04T24:00Z",
      "2026-12-04T10:60Z",
      "2026-13-01T00:00Z",
      "tomorrow",
    ])
      assert.strictEqual(parseInstant(text), undefined, text)
    assert.isTrue(Either.isRight(parseSilences("[]")))
  })
})
