import { Database } from "bun:sqlite"
import { footerKeys } from "@flymon/core/DiscordMessage"
import { configId } from "@flymon/core/Silences"
import { FakeDiscord } from "@flymon/testkit/FakeDiscord"
import { FakeFly } from "@flymon/testkit/FakeFly"
import { existsSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, assert, beforeEach, describe, it } from "vitest"
import { BadArgument, parseAdd } from "../src/SilenceCommand.ts"
import { runCli } from "./cli.ts"

// `silence` through the real entry point, against a SQLite file and the
// fakes on 127.0.0.1, as a user runs it.

const FLY_TOKEN = "FlyV1 fm2_silence-secret-macaroon"
const WEBHOOK_TOKEN = "silence-secret-webhook-token"
const ORG = "acme"
const HINT =
  "Set the variables in apps/bun/.env.local (see README.md), " +
  "or try the simulated org with `pnpm demo`."

let fly: FakeFly
let discord: FakeDiscord
let dir: string

beforeEach(async () => {
  fly = await FakeFly.start({ token: FLY_TOKEN, org: ORG })
  discord = await FakeDiscord.start()
  dir = mkdtempSync(join(tmpdir(), "flymon-silence-"))
})

afterEach(async () => {
  await Promise.all([fly.stop(), discord.stop()])
  rmSync(dir, { recursive: true, force: true })
})

const databasePath = () => join(dir, "monitor.db")

const env = (extra: Record<string, string> = {}) => ({
  FLY_API_TOKEN: FLY_TOKEN,
  FLY_ORG_SLUG: ORG,
  FLY_API_BASE_URL: fly.url,
  DISCORD_WEBHOOK_URL: discord.webhookUrl("900", WEBHOOK_TOKEN),
  DATABASE_PATH: databasePath(),
  DIGEST_HOUR: "off",
  ...extra,
})

const cli = async (args: ReadonlyArray<string>, extra = {}) =>
  runCli(args, env(extra), { cwd: dir })

const ok = async (args: ReadonlyArray<string>, extra = {}) => {
  const result = await cli(args, extra)
  assert.strictEqual(result.code, 0, result.stderr + result.stdout)
  return result.stdout.trimEnd().split("\n")
}

/** Per embed posted since `from`: its event keys, or its title. */
const posted = (from: number) =>
  discord.messages
    .slice(from)
    .flatMap((message) =>
      (message.embeds ?? []).map(
        (embed: { title: string; footer: { text: string } }) =>
          embed.footer.text.startsWith("event ")
            ? footerKeys(embed.footer.text).join(" ")
            : embed.title,
      ),
    )

const eventRows = () => {
  const db = new Database(databasePath(), { readonly: true })
  try {
    return db
      .query(
        `SELECT key, app, folded_into, notified_at IS NOT NULL AS settled
         FROM events WHERE baseline = 0 ORDER BY key`,
      )
      .all()
  } finally {
    db.close()
  }
}

const HEADER =
  "ID  FROM         TARGET         UNTIL                 STATE   SILENCED  REASON"

describe("silences through the Bun runner", () => {
  it("add, list, a pass that sends only what is not silenced, rm", async () => {
    fly.addApp("staging-web")
    fly.addApp("prod-web")
    fly.addMachine("staging-web", { id: "s1", name: "stage", region: "ams" })
    fly.addMachine("prod-web", { id: "p1", name: "prod", region: "ams" })
    await ok(["--once"])
    assert.strictEqual(discord.messages.length, 1)

    const before = Date.now()
    const added = await ok([
      "silence",
      "add",
      "app=staging-*",
      "for=2h",
      "reason=load test <@everyone>",
    ])
    const after = Date.now()
    const until = /until (\S+) /.exec(added[0]!)![1]!
    const untilMs = Date.parse(until)
    // Whole seconds, rounded up from the moment it was added.
    assert.isAtLeast(untilMs, before + 2 * 3_600_000)
    assert.isAtMost(untilMs, after + 2 * 3_600_000 + 1000)
    assert.strictEqual(untilMs % 1000, 0)
    assert.deepStrictEqual(added, [
      `Added silence 1 on app staging-* until ${until} (2 h); reason: load test <@everyone>`,
      "Its alerts are recorded and counted, not sent. End it early with: silence rm 1",
    ])
    assert.deepStrictEqual(await ok(["silence", "list"]), [
      HEADER,
      `1   silence add  app staging-*  ${until}  active  0         load test <@everyone>`,
    ])

    const stagingStart = fly.start("s1")
    const prodStart = fly.start("p1")
    await ok(["--once"])
    assert.deepStrictEqual(posted(1), [prodStart.id])
    assert.deepStrictEqual(
      eventRows(),
      [
        {
          key: stagingStart.id!,
          app: "staging-web",
          folded_into: "silence:1",
          settled: 1,
        },
        { key: prodStart.id!, app: "prod-web", folded_into: null, settled: 1 },
      ].sort((a, b) => a.key.localeCompare(b.key)),
    )
    assert.deepStrictEqual(await ok(["silence", "list"]), [
      HEADER,
      `1   silence add  app staging-*  ${until}  active  1         load test <@everyone>`,
    ])

    assert.deepStrictEqual(await ok(["silence", "rm", "1"]), [
      "Removed silence 1 on app staging-*; it silenced 1 alert.",
    ])
    assert.deepStrictEqual(await ok(["silence", "list"]), [
      "No silences. Add one with silence add, or set SILENCES.",
    ])
    const sent = discord.messages.length
    const stagingExit = fly.exit("s1", { exitCode: 3 })
    await ok(["--once"])
    assert.deepStrictEqual(posted(sent), [
      stagingExit.id,
      "Silence on app staging\\-\\* ended: 1 event was silenced",
    ])
    const ended = discord.messages.at(-1)!.embeds![0]
    assert.deepStrictEqual(ended.fields, [
      { name: "Silenced", value: "start 1" },
      {
        name: "Silence",
        value: `app \`staging-*\` until <t:${untilMs / 1000}:f> · removed with silence rm`,
      },
      { name: "Reason", value: "load test \\<@\u200beveryone\\>" },
    ])
    assert.deepStrictEqual(discord.messages.at(-1)!.allowed_mentions, {
      parse: [],
    })

    // A second rm finds nothing to remove.
    const again = await cli(["silence", "rm", "1"])
    assert.strictEqual(again.code, 2)
    assert.strictEqual(
      again.stderr,
      'silence rm: no silence "1" to remove; silence list shows them\n',
    )
    const everything =
      JSON.stringify(discord.messages) + added.join("\n") + again.stderr
    for (const secret of ["silence-secret-macaroon", WEBHOOK_TOKEN])
      assert.notInclude(everything, secret)
  })

  it("lists SILENCES entries and refuses to remove them", async () => {
    const silences = JSON.stringify([
      { machine: "148e123", until: "2026-01-05T10:00Z" },
      { app: "web-?", until: "2099-01-01T00:00Z", reason: "big\u001b[2Jmove" },
    ])
    await ok(["silence", "add", "machine=m9", "until=2099-06-01T12:30+02:00"])
    const lines = await ok(["silence", "list"], { SILENCES: silences })
    const machineId = configId({ _tag: "Machine", id: "148e123" })
    const appId = configId({ _tag: "App", glob: "web-?" })
    assert.deepStrictEqual(lines, [
      "ID          FROM         TARGET           UNTIL                 STATE    SILENCED  REASON",
      `${machineId}  SILENCES     machine 148e123  2026-01-05T10:00:00Z  expired  0`,
      `${appId}  SILENCES     app web-?        2099-01-01T00:00:00Z  active   0         big[2Jmove`,
      "1           silence add  machine m9       2099-06-01T10:30:00Z  active   0",
    ])
    const refused = await cli(["silence", "rm", appId], { SILENCES: silences })
    assert.deepStrictEqual(
      [refused.code, refused.stderr],
      [
        2,
        `silence rm: ${appId} is set in SILENCES; remove it there, and the next pass ends it\n`,
      ],
    )
  })

  it("exits 2 with one clear line on bad arguments", async () => {
    // Every message of add is checked on parseAdd below; these go through
    // the entry point.
    const cases: Array<[ReadonlyArray<string>, string]> = [
      [[], "silence: expected add, list or rm (see --help)"],
      [["mute"], 'silence: unknown command "mute"; expected add, list or rm'],
      [
        ["add", "app=web-*"],
        "silence add: give exactly one of for=<duration> (such as 2h) or until=<date-time> (such as 2026-12-04T10:00Z)",
      ],
      [
        ["add", "app=web-*", "until=2026-12-04T10:00"],
        'silence add: until="2026-12-04T10:00" is not a date-time with a time zone such as 2026-12-04T10:00Z',
      ],
      [
        ["add", "machine=web-*", "for=1h"],
        "silence add: machine= is a machine id, matched exactly; for a glob use app=<glob> (machine names are not matched)",
      ],
      [["list", "all"], "silence list: takes no arguments"],
      [["rm"], "silence rm: expected one id, as silence list shows it"],
    ]
    for (const [args, message] of cases) {
      const result = await cli(["silence", ...args])
      assert.deepStrictEqual(
        [result.code, result.stderr, result.stdout],
        [2, `${message}\n`, ""],
        args.join(" "),
      )
    }
    // None of them touched the database.
    assert.isFalse(existsSync(databasePath()))
    const missing = await cli(["silence", "list"])
    assert.deepStrictEqual(
      [missing.code, missing.stderr],
      [
        1,
        `no database at DATABASE_PATH=${databasePath()}: run the monitor first, or point DATABASE_PATH at its database\n`,
      ],
    )
  })

  it("names SILENCES when it is not valid, on a pass and on silence", async () => {
    const line =
      "configuration error: SILENCES: invalid: not valid JSON; expected an " +
      'array such as [{"app":"staging-*","until":"2026-12-24T00:00Z","reason":"load test"}]'
    const pass = await cli(["--once"], { SILENCES: '[{"app":"web-*",' })
    assert.deepStrictEqual(
      [pass.code, pass.stderr.trim().split("\n")],
      [2, [line, HINT]],
    )
    const list = await cli(["silence", "list"], { SILENCES: "[{" })
    assert.deepStrictEqual([list.code, list.stderr], [2, `${line}\n`])
    const unknown = await cli(["--once"], {
      SILENCES: '[{"app":"web-*","until":"2026-12-24T00:00Z","for":"2h"}]',
    })
    assert.strictEqual(unknown.code, 2)
    assert.include(
      unknown.stderr,
      'configuration error: SILENCES: invalid: entry 1: unknown key "for"; allowed: app, machine, until, reason\n',
    )
    assert.strictEqual(discord.requests.length, 0)
  })
})

describe("parseAdd", () => {
  const now = Date.UTC(2026, 11, 3, 15, 59, 30, 250)

  it("reads a target, an end and a reason", () => {
    assert.deepStrictEqual(
      parseAdd(["app=web-*", "for=2h", "reason= deploying "], now),
      {
        target: { _tag: "App", glob: "web-*" },
        // Rounded up to a whole second.
        until: Date.UTC(2026, 11, 3, 17, 59, 31),
        reason: "deploying",
      },
    )
    assert.deepStrictEqual(
      parseAdd(["until=2026-12-04T11:00+01:00", "machine=148e123"], now),
      {
        target: { _tag: "Machine", id: "148e123" },
        until: Date.UTC(2026, 11, 4, 10, 0),
        reason: undefined,
      },
    )
  })

  it("says what is wrong", () => {
    const cases: Array<[ReadonlyArray<string>, string]> = [
      [
        ["for=2h"],
        "give exactly one of app=<glob> (such as web-*) or machine=<id>",
      ],
      [
        ["app=web-*", "machine=m1", "for=2h"],
        "give exactly one of app=<glob> (such as web-*) or machine=<id>",
      ],
      [
        ["app=web-*", "for=2h", "until=2026-12-04T10:00Z"],
        "give exactly one of for=<duration> (such as 2h) or until=<date-time> (such as 2026-12-04T10:00Z)",
      ],
      [
        ["app=web-*", "for=soon"],
        'for="soon" is not a duration such as 30m, 2h or 3d',
      ],
      [
        ["app=web-*", "for=2"],
        'for="2" is not a duration such as 30m, 2h or 3d',
      ],
      [
        ["app=web-*", "until=2026-02-30T10:00Z"],
        'until="2026-02-30T10:00Z" is not a date-time with a time zone such as 2026-12-04T10:00Z',
      ],
      [
        ["app=web-*", "until=2020-01-01T00:00Z"],
        "the silence would end at 2020-01-01T00:00:00Z, in the past",
      ],
      [
        ["app=web-*", "for=2h", "reasn=x"],
        'unexpected "reasn=x"; expected app=<glob> or machine=<id>, for=<duration> or until=<date-time>, and optionally reason=<text>',
      ],
      [
        ["web-*", "for=2h"],
        'unexpected "web-*"; expected app=<glob> or machine=<id>, for=<duration> or until=<date-time>, and optionally reason=<text>',
      ],
      [["app=", "for=2h"], "app= is empty"],
      [["app=a", "app=b", "for=2h"], "app= is given twice"],
      [
        ["app=a", "for=2h", `reason=${"x".repeat(501)}`],
        "reason= is longer than 500 characters",
      ],
    ]
    for (const [args, message] of cases)
      assert.deepStrictEqual(
        parseAdd(args, now),
        new BadArgument(`silence add: ${message}`),
        args.join(" "),
      )
  })
})
