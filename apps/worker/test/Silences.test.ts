import { assert, describe, it } from "@effect/vitest"
import { control } from "./control.ts"
import { footers, freshFakes, rows, tick } from "./support.ts"

// SILENCES on the Worker: the same pass on D1, the variable under `vars`.

const stage = "5683d920b1e238"
const prod = "9185e3f2a7c640"

describe("SILENCES on D1", () => {
  it("folds a muted app's events, posts the others, notes the end once", async () => {
    const { vars } = await freshFakes()
    await control.addApp("staging-web")
    await control.addMachine({
      app: "staging-web",
      id: stage,
      name: "stage",
      region: "ams",
    })
    await control.addApp("prod-web")
    await control.addMachine({
      app: "prod-web",
      id: prod,
      name: "prod",
      region: "ams",
    })
    const muted = {
      ...vars,
      SILENCES: JSON.stringify([
        { app: "staging-*", until: "2099-01-01T00:00Z", reason: "load test" },
      ]),
    }
    await tick(muted)
    const muffled = await control.start(stage)
    const heard = await control.start(prod)
    await tick(muted)
    const id = (await rows<{ id: string }>("SELECT id FROM silences"))[0]!.id
    assert.deepStrictEqual(
      await rows(
        "SELECT key, folded_into FROM events WHERE baseline = 0 ORDER BY key",
      ),
      [
        { key: muffled.id, folded_into: `silence:${id}` },
        { key: heard.id, folded_into: null },
      ].sort((a, b) => a.key.localeCompare(b.key)),
    )
    assert.deepStrictEqual(footers(await control.discordMessages()), [
      `event ${heard.id}`,
    ])

    // Taken out of SILENCES: ended at the next cron event, noted once.
    const exit = await control.exit(stage, { exitCode: 2 })
    await tick(vars)
    await tick(vars)
    const messages = await control.discordMessages()
    assert.deepStrictEqual(footers(messages).slice(1), [
      `event ${exit.id}`,
      `silence ${id} ${Date.UTC(2099, 0, 1)} ended`,
    ])
    assert.strictEqual(
      messages.at(-1)!.embeds![0]!.title,
      "Silence on app staging\\-\\* ended: 1 event was silenced",
    )
    assert.deepStrictEqual(
      await rows("SELECT silence_id, type, n FROM silence_counts"),
      [{ silence_id: id, type: "start", n: 1 }],
    )
  })

  it("reports an invalid SILENCES by name and runs no pass", async () => {
    const { vars } = await freshFakes()
    // Env does not list SILENCES: the Worker hands every variable to Config.
    const invalid = { ...vars, SILENCES: "[{" }
    await tick(invalid)
    assert.deepStrictEqual(await control.discordMessages(), [])
    assert.deepStrictEqual(await rows("SELECT key FROM events"), [])
  })
})
