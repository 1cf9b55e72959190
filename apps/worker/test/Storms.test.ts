import { assert, describe, it } from "@effect/vitest"
import { control } from "./control.ts"
import { footers, freshFakes, rows, tick } from "./support.ts"

// Restart storms and the per-app limit on the Worker: the same SQL on D1.

const looping = "4d8916ea2c9b07"

describe("restart storms on D1", () => {
  it("a crash loop between two cron events is one storm alert", async () => {
    const { vars } = await freshFakes()
    await control.addApp("jobs")
    await control.addMachine({
      app: "jobs",
      id: looping,
      name: "worker",
      region: "ams",
    })
    await tick(vars)
    const loop = []
    for (let i = 0; i < 4; i++) {
      loop.push(await control.start(looping))
      loop.push(await control.exit(looping, { exitCode: 1 }))
    }
    await tick(vars)
    const first = loop.reduce((a, b) => (a.timestamp <= b.timestamp ? a : b))
    const storm = `storm:${looping}:${first.timestamp}`
    assert.deepStrictEqual(
      footers((await control.discordMessages()).slice(1)),
      [storm],
    )
    assert.deepStrictEqual(
      await rows<{ key: string; folded_into: string | null }>(
        "SELECT key, folded_into FROM events WHERE baseline = 0 ORDER BY key",
      ),
      loop
        .map((event) => ({ key: event.id, folded_into: storm }))
        .sort((a, b) => a.key.localeCompare(b.key)),
    )
    // Two more restarts: folded into the storm, no message until an update
    // is due (STORM_UPDATE_EVERY, 30 min).
    await control.start(looping)
    await control.exit(looping, { exitCode: 1 })
    await tick(vars)
    assert.strictEqual((await control.discordMessages()).length, 2)
    assert.deepStrictEqual(
      await rows(
        `SELECT count(*) AS n FROM events WHERE baseline = 0 AND folded_into = '${storm}'`,
      ),
      [{ n: 10 }],
    )
  })

  it("past APP_ALERT_LIMIT, an app's further events are held back", async () => {
    const { vars } = await freshFakes()
    await control.addApp("shop")
    const ids = ["a1b2c3d4e5f601", "a1b2c3d4e5f602", "a1b2c3d4e5f603"]
    for (const id of ids)
      await control.addMachine({ app: "shop", id, name: id, region: "ams" })
    const limited = { ...vars, APP_ALERT_LIMIT: "2" }
    await tick(limited)
    const started = []
    for (const id of ids) started.push(await control.start(id))
    await tick(limited)
    const folded = await rows<{ key: string; folded_into: string | null }>(
      "SELECT key, folded_into FROM events WHERE baseline = 0 ORDER BY timestamp, key",
    )
    assert.deepStrictEqual(
      folded.map((row) => row.folded_into === null),
      [true, true, false],
    )
    assert.match(folded[2]!.folded_into!, /^limit:shop:\d+$/)
    assert.deepStrictEqual(
      footers((await control.discordMessages()).slice(1)).sort(),
      folded
        .slice(0, 2)
        .map((row) => `event ${row.key}`)
        .sort(),
    )
  })
})
