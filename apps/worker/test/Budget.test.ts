import { assert, describe, it } from "@effect/vitest"
import { env } from "cloudflare:test"
import {
  DISCORD_RESERVE,
  FLY_REQUEST_BUDGET,
  FREE_PLAN_SUBREQUESTS,
} from "../src/Policy.ts"
import { control } from "./control.ts"
import { footers, freshFakes, lastPass, rows, tick } from "./support.ts"

const APPS = Array.from(
  { length: 60 },
  (_, i) => `app-${String(i).padStart(2, "0")}`,
)

/** 60 apps of one machine each, more than one invocation may list. */
const bigOrg = async (history: boolean) => {
  for (const [i, app] of APPS.entries()) {
    await control.addApp(app)
    const id = `m${String(i).padStart(13, "0")}`
    await control.addMachine({ app, id, name: `${app}-vm`, region: "ams" })
    if (history)
      await control.emit({
        machineId: id,
        type: "start",
        status: "started",
        request: {},
        timestamp: Date.now() - 10 * 60_000,
      })
  }
}

const quiet = async () => {
  const { vars } = await freshFakes()
  return { ...vars, LOG_LEVEL: "Off" }
}

/** One invocation; the apps whose machines it listed, and its requests. */
const invocation = async (vars: Parameters<typeof tick>[0]) => {
  const before = (await control.flyRequests()).length
  await tick(vars)
  const requests = (await control.flyRequests()).slice(before)
  const polled = requests.flatMap((r) => {
    const match = /^\/v1\/apps\/([^/]+)\/machines$/.exec(r.path)
    return match === null ? [] : [match[1]!]
  })
  return { requests: requests.length, polled, pass: await lastPass() }
}

describe("subrequest budget", () => {
  it("keeps Discord's reserve out of the 50 subrequests", () => {
    assert.strictEqual(FREE_PLAN_SUBREQUESTS, 50)
    assert.strictEqual(FLY_REQUEST_BUDGET + DISCORD_RESERVE, 50)
  })

  it("polls a big org in turns from a cursor, within budget each time", async () => {
    const vars = await quiet()
    await bigOrg(false)

    const first = await invocation(vars)
    const second = await invocation(vars)
    const third = await invocation(vars)

    for (const each of [first, second, third]) {
      assert.isAtMost(each.requests, FLY_REQUEST_BUDGET)
      assert.strictEqual(each.requests, each.pass.counts.flyRequests)
      assert.strictEqual(each.requests, each.pass.subrequests.fly)
      assert.strictEqual(each.polled.length, each.pass.counts.appsPolled)
      assert.strictEqual(each.pass.counts.apps, 60)
    }
    // Apps in name order from the cursor, wrapping round.
    assert.deepStrictEqual(first.polled.sort(), APPS.slice(0, 34))
    assert.deepStrictEqual(
      second.polled.sort(),
      [...APPS.slice(34), ...APPS.slice(0, 8)].sort(),
    )
    assert.deepStrictEqual(third.polled.sort(), APPS.slice(8, 42))
    // The first pass also greets Discord once.
    assert.deepStrictEqual(
      [first, second, third].map((each) => each.pass.subrequests),
      [
        { total: 36, fly: 35, refused: 0 },
        { total: 35, fly: 35, refused: 0 },
        { total: 35, fly: 35, refused: 0 },
      ],
    )
    assert.deepStrictEqual(
      [...new Set([...first.polled, ...second.polled])].sort(),
      APPS,
    )
    assert.deepStrictEqual(await rows("SELECT count(*) AS n FROM machines"), [
      { n: 60 },
    ])
    assert.deepStrictEqual(
      await rows("SELECT value FROM meta WHERE key = 'app_cursor'"),
      [{ value: "app-42" }],
    )
  })

  it("refuses Fly retries past the budget, so Discord still gets its share", async () => {
    const vars = await quiet()
    await bigOrg(false)
    await tick(vars)
    await tick(vars)
    // An alert a failed delivery left behind.
    await env.DB.prepare(
      `INSERT INTO events (key, machine_id, app, type, status, source,
        timestamp, first_seen_at) VALUES (?, ?, ?, 'start', 'started', 'flyd',
        ?, ?)`,
    )
      .bind("01PENDING", "m0000000000000", "app-00", Date.now(), Date.now())
      .run()
    await control.failNext({ path: "/machines$", status: 503, times: 1000 })

    const during = await invocation(vars)

    // 34 lists retried twice would be 103 requests; the Worker sends 40.
    assert.strictEqual(during.requests, FLY_REQUEST_BUDGET)
    assert.deepStrictEqual(during.pass.subrequests, {
      total: FLY_REQUEST_BUDGET + 1,
      fly: FLY_REQUEST_BUDGET,
      refused: 1 + 34 * 3 - FLY_REQUEST_BUDGET,
    })
    assert.strictEqual(during.pass.ok, true)
    assert.strictEqual(during.pass.counts.failedApps, 34)
    assert.deepStrictEqual(
      footers((await control.discordMessages()).slice(1)),
      ["event 01PENDING"],
    )
  })

  // A budgeted first pass reaches only some apps; the others are baselined
  // when the cursor reaches them, so their history is not announced.
  it("baselines apps the first pass could not reach", async () => {
    const vars = await quiet()
    await bigOrg(true)

    const first = await invocation(vars)
    const second = await invocation(vars)

    assert.strictEqual(first.pass.counts.baseline, true)
    assert.deepStrictEqual(second.pass.counts.newEvents, 0)
    assert.deepStrictEqual(footers(await control.discordMessages()), [])
  })
})
