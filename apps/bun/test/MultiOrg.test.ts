import { footerKeys } from "@flymon/core/DiscordMessage"
import { FakeDiscord } from "@flymon/testkit/FakeDiscord"
import { FakeFly } from "@flymon/testkit/FakeFly"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, assert, beforeEach, describe, it } from "vitest"
import { runCli } from "./cli.ts"

// FLY_ORGS through the real Bun entry point: a subprocess on a SQLite file,
// the fake Fly serving two orgs, each to its own token only.

const TOKENS = {
  acme: "FlyV1 fm2_e2e-acme-secret-macaroon",
  personal: "fo1_e2e-personal-secret-token",
}
const SECRETS = [
  "e2e-acme-secret-macaroon",
  "e2e-personal-secret-token",
  "e2e-orgs-webhook-token",
]

let fly: FakeFly
let discord: FakeDiscord
let dir: string

beforeEach(async () => {
  fly = await FakeFly.start({ orgs: TOKENS })
  discord = await FakeDiscord.start()
  dir = mkdtempSync(join(tmpdir(), "flymon-orgs-"))
  const guest = { cpu_kind: "shared", cpus: 1, memory_mb: 256 }
  fly.addApp("shop", { org: "acme" })
  fly.addApp("blog", { org: "personal" })
  fly.addMachine("shop", { id: "a1", name: "web", region: "ams", guest })
  fly.addMachine("blog", { id: "p1", name: "pages", region: "cdg", guest })
  for (const id of ["a1", "p1"]) fly.start(id)
})

afterEach(async () => {
  await Promise.all([fly.stop(), discord.stop()])
  rmSync(dir, { recursive: true, force: true })
})

const env = (orgs: Record<string, string> = TOKENS) => ({
  FLY_ORGS: JSON.stringify(orgs),
  FLY_API_BASE_URL: fly.url,
  DISCORD_WEBHOOK_URL: discord.webhookUrl("888", "e2e-orgs-webhook-token"),
  DATABASE_PATH: join(dir, "monitor.db"),
  LOG_LEVEL: "Debug",
  DIGEST_HOUR: "off",
})

const once = async (vars: Record<string, string> = env()) => {
  const result = await runCli(["--once"], vars, { cwd: dir })
  return { ...result, output: result.stdout + result.stderr }
}

/** The event keys of the alerts posted, in the order they went out. */
const announced = () =>
  discord.messages.flatMap((m) =>
    (m.embeds ?? []).flatMap((e: { footer: { text: string } }) =>
      footerKeys(e.footer.text),
    ),
  )

const embedOf = (key: string) =>
  discord.messages
    .flatMap((m) => m.embeds ?? [])
    .find((e: { footer: { text: string } }) =>
      footerKeys(e.footer.text).includes(key),
    )

const greeting = (org: string) =>
  `Now watching org \`${org}\`: 1 app, 1 machine, 1 running. ` +
  "Machine start, stop and exit events from now on will be posted here."

describe("FLY_ORGS through the Bun runner", () => {
  it("announces both orgs' new events once, after one greeting each, with each org's token", async () => {
    const baseline = await once()
    assert.strictEqual(baseline.code, 0, baseline.output)
    assert.deepStrictEqual(
      discord.messages.map((m) => m.content),
      [greeting("acme"), greeting("personal")],
    )

    const crashed = fly.exit("a1", { exitCode: 1 })
    const stopped = fly.exit("p1", { requestedStop: true })
    const restarted = fly.start("p1")
    const second = await once()
    assert.strictEqual(second.code, 0, second.output)
    const idle = await once()
    assert.strictEqual(idle.code, 0, idle.output)

    assert.sameMembers(announced(), [crashed.id!, stopped.id!, restarted.id!])
    assert.strictEqual(announced().length, 3)
    assert.strictEqual(discord.messages.length, 3)
    // Each alert carries its own org, never the other one.
    assert.include(JSON.stringify(embedOf(crashed.id!)), "acme")
    assert.notInclude(JSON.stringify(embedOf(crashed.id!)), "personal")
    assert.include(JSON.stringify(embedOf(restarted.id!)), "personal")
    assert.notInclude(JSON.stringify(embedOf(restarted.id!)), "acme")

    const byPath = new Map<string, Set<string>>()
    for (const r of fly.requests) {
      const where = r.query.org_slug ?? r.path.split("/")[3]!
      byPath.set(
        where,
        (byPath.get(where) ?? new Set()).add(r.authorization ?? ""),
      )
    }
    assert.deepStrictEqual(
      [...byPath.entries()].map(([where, auth]) => [where, [...auth]]).sort(),
      [
        ["acme", [TOKENS.acme]],
        ["blog", [`Bearer ${TOKENS.personal}`]],
        ["personal", [`Bearer ${TOKENS.personal}`]],
        ["shop", [TOKENS.acme]],
      ],
    )
    assert.deepStrictEqual(
      [...new Set(fly.requests.map((r) => r.status))],
      [200],
    )

    const everything = [baseline, second, idle]
      .map((run) => run.output)
      .join("\n")
    const done = everything
      .split("\n")
      .filter((line) => line.includes('message="pass done"'))
    assert.strictEqual(done.length, 3)
    for (const line of done) {
      assert.include(line, " orgs=2 ")
      assert.include(line, " failed_orgs=0 ")
    }
    for (const secret of SECRETS) {
      assert.notInclude(everything, secret)
      assert.notInclude(JSON.stringify(discord.messages), secret)
    }
  })

  it("one org's token rejected: the other's alerts go out, exit 1 naming the org", async () => {
    assert.strictEqual((await once()).code, 0)
    const crashed = fly.exit("a1", { exitCode: 1 })
    const personalCrash = fly.exit("p1", { exitCode: 2 })
    fly.setToken("personal", "fo1_rotated-elsewhere")

    const failed = await once()

    assert.strictEqual(failed.code, 1)
    assert.deepStrictEqual(announced(), [crashed.id])
    const warning = failed.output
      .split("\n")
      .find((line) =>
        line.includes(
          'message="could not poll an org this pass; the other orgs go on"',
        ),
      )
    assert.include(warning, "level=WARN ")
    assert.include(warning, " org=personal")
    assert.include(
      warning,
      'error="Fly API token rejected (HTTP 401) for org personal on GET /v1/apps?org_slug=personal: token rejected"',
    )
    assert.match(
      failed.output,
      /Fly API token rejected \(HTTP 401\) for org personal on GET \/v1\/apps\?org_slug=personal/,
    )
    for (const secret of SECRETS) assert.notInclude(failed.output, secret)

    fly.setToken("personal", TOKENS.personal)
    const recovered = await once()
    assert.strictEqual(recovered.code, 0, recovered.output)
    assert.deepStrictEqual(announced(), [crashed.id, personalCrash.id])
  })

  it("refuses FLY_ORGS next to FLY_API_TOKEN, or invalid, without its value", async () => {
    const both = await once({
      ...env(),
      FLY_API_TOKEN: TOKENS.acme,
    })
    const invalid = await once({
      ...env(),
      FLY_ORGS: `{"acme": "${TOKENS.acme}"`,
    })
    assert.deepStrictEqual([both.code, invalid.code], [2, 2])
    assert.strictEqual(
      both.stderr.split("\n")[0],
      "configuration error: FLY_ORGS: invalid: set either FLY_ORGS or FLY_API_TOKEN with FLY_ORG_SLUG, not both; FLY_API_TOKEN is set too",
    )
    assert.strictEqual(
      invalid.stderr.split("\n")[0],
      'configuration error: FLY_ORGS: invalid: not valid JSON (value not shown: it holds tokens); expected an object from org slug to token, such as {"acme": "FlyV1 fm2_…", "personal": "fo1_…"}',
    )
    for (const secret of SECRETS)
      assert.notInclude(both.output + invalid.output, secret)
    assert.deepStrictEqual(fly.requests, [])
  })
})
