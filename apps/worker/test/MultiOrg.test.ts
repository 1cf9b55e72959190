import { assert, describe, it } from "@effect/vitest"
import { afterEach, beforeEach, vi } from "vitest"
import { control } from "./control.ts"
import { FLY_TOKEN, ORG } from "./fixtures.ts"
import { freshFakes, lastPass, tick } from "./support.ts"

// The Worker reads the orgs from the FLY_ORGS secret. The fake behind
// `control` serves one org, so several orgs are covered by the core and
// Bun tests; here, the bindings and their conflicts.

let logged: Array<string> = []
beforeEach(() => {
  logged = []
  vi.spyOn(console, "log").mockImplementation((line: unknown) => {
    logged.push(String(line))
  })
})
afterEach(() => {
  vi.restoreAllMocks()
})

/** The fresh fakes' variables with FLY_ORGS instead of the single org. */
const withOrgs = async () => {
  const { vars } = await freshFakes()
  const { FLY_API_TOKEN: _, FLY_ORG_SLUG: __, ...rest } = vars
  return { ...rest, FLY_ORGS: JSON.stringify({ [ORG]: FLY_TOKEN }) }
}

describe("FLY_ORGS on the Worker", () => {
  it("polls the orgs of the FLY_ORGS secret with their tokens", async () => {
    const vars = await withOrgs()
    await control.addApp("shop-web")
    await control.addMachine({
      app: "shop-web",
      id: "148ed193b95089",
      name: "wandering-meadow-4821",
      region: "ams",
    })

    await tick(vars)

    const pass = await lastPass()
    assert.strictEqual(pass.ok, true)
    assert.deepStrictEqual(
      (await control.discordMessages()).map((m) => m.content),
      [
        "Now watching org `acme`: 1 app, 1 machine, 0 running. " +
          "Machine start, stop and exit events from now on will be posted here.",
      ],
    )
    const requests = (await control.flyRequests()) as unknown as ReadonlyArray<{
      path: string
      status: number
      authorization: string
    }>
    assert.deepStrictEqual(
      requests.map((r) => [r.path, r.status, r.authorization]).sort(),
      [
        ["/v1/apps", 200, FLY_TOKEN],
        ["/v1/apps/shop-web/machines", 200, FLY_TOKEN],
      ],
    )
  })

  it("refuses FLY_ORGS next to the FLY_ORG_SLUG var, naming both, and runs no pass", async () => {
    const vars = { ...(await withOrgs()), FLY_ORG_SLUG: ORG }

    await tick(vars)

    const problems = logged
      .map((line) => JSON.parse(line))
      .filter((line) => line.logLevel === "ERROR")
      .map((line) => [line.annotations.variable, line.annotations.problem])
    assert.deepStrictEqual(problems, [
      [
        "FLY_ORGS",
        "invalid: set either FLY_ORGS or FLY_API_TOKEN with FLY_ORG_SLUG, not both; FLY_ORG_SLUG is set too",
      ],
    ])
    assert.deepStrictEqual(await control.flyRequests(), [])
    const recorded = await lastPass()
    assert.deepStrictEqual(
      [recorded.ok, recorded.failure.kind, recorded.failure.reason],
      [false, "ConfigError", "InvalidConfig"],
    )
    assert.notInclude(logged.join("\n"), "worker-test-macaroon")
    assert.notInclude(JSON.stringify(recorded), "worker-test-macaroon")
  })
})
