import { footerKeys } from "@flymon/core/DiscordMessage"
import { FakeDiscord } from "@flymon/testkit/FakeDiscord"
import { FakeFly } from "@flymon/testkit/FakeFly"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, assert, beforeEach, describe, it } from "vitest"
import { runCli } from "./cli.ts"

const FLY_TOKEN = "FlyV1 fm2_routing-secret-macaroon"
const ORG = "acme"
const TOKENS = {
  web: "route-web-secret-token",
  data: "route-data-secret-token",
  fallback: "route-default-secret-token",
}

let fly: FakeFly
let discord: FakeDiscord
let dir: string

beforeEach(async () => {
  fly = await FakeFly.start({ token: FLY_TOKEN, org: ORG })
  discord = await FakeDiscord.start()
  dir = mkdtempSync(join(tmpdir(), "flymon-routes-"))
})

afterEach(async () => {
  await Promise.all([fly.stop(), discord.stop()])
  rmSync(dir, { recursive: true, force: true })
})

const env = (routes: string) => ({
  FLY_API_TOKEN: FLY_TOKEN,
  FLY_ORG_SLUG: ORG,
  FLY_API_BASE_URL: fly.url,
  DISCORD_WEBHOOK_URL: discord.webhookUrl("300", TOKENS.fallback),
  DISCORD_ROUTES: routes,
  DATABASE_PATH: join(dir, "monitor.db"),
  DIGEST_HOUR: "off",
})

const routes = () =>
  JSON.stringify([
    {
      name: "web team",
      apps: "web-*",
      webhook: discord.webhookUrl("100", TOKENS.web),
    },
    {
      name: "data team",
      apps: ["db", "etl-*"],
      webhook: discord.webhookUrl("200", TOKENS.data),
    },
  ])

/** What each webhook received: per message, its event keys or its text. */
const received = (id: string) =>
  discord.requests
    .filter((request) => request.path.split("/")[3] === id)
    .map((request) => {
      const body = request.body as {
        content?: string
        embeds?: Array<{ footer: { text: string } }>
      }
      return body.embeds === undefined
        ? [body.content?.split(":")[0] ?? ""]
        : body.embeds.flatMap((embed) => footerKeys(embed.footer.text))
    })

const shared = { cpu_kind: "shared", cpus: 1, memory_mb: 256 }

describe("DISCORD_ROUTES through the Bun runner", () => {
  it("posts each app's alerts to its route, the rest to the default", async () => {
    for (const app of ["web-shop", "db", "billing"]) fly.addApp(app)
    fly.addMachine("web-shop", {
      id: "w1",
      name: "web",
      region: "ams",
      guest: shared,
    })
    fly.addMachine("db", { id: "d1", name: "pg", region: "ams", guest: shared })
    fly.addMachine("billing", {
      id: "b1",
      name: "cron",
      region: "ams",
      guest: shared,
    })
    const first = await runCli(["--once"], env(routes()), { cwd: dir })
    assert.strictEqual(first.code, 0, first.stderr + first.stdout)

    const web = fly.start("w1")
    const db = [fly.start("d1"), fly.exit("d1", { exitCode: 3 })]
    const billing = fly.start("b1")
    const second = await runCli(["--once"], env(routes()), { cwd: dir })
    assert.strictEqual(second.code, 0, second.stderr + second.stdout)

    assert.deepStrictEqual(["100", "200", "300"].map(received), [
      [[web.id]],
      // Both events of the database machine share one embed.
      [db.map((event) => event.id)],
      [["Now watching org `acme`"], [billing.id]],
    ])
    const output = first.stdout + first.stderr + second.stdout + second.stderr
    for (const secret of [...Object.values(TOKENS), FLY_TOKEN])
      assert.notInclude(output, secret)
  })

  it("refuses to start on invalid routes, naming the variable, not the value", async () => {
    const broken = routes().slice(0, -1)
    const result = await runCli(["--once"], env(broken), { cwd: dir })
    assert.strictEqual(result.code, 2)
    assert.include(
      result.stderr,
      "configuration error: DISCORD_ROUTES: invalid: not valid JSON (value " +
        "not shown: it holds webhook URLs)",
    )
    assert.strictEqual(discord.requests.length, 0)
    for (const secret of Object.values(TOKENS))
      assert.notInclude(result.stdout + result.stderr, secret)
  })
})
