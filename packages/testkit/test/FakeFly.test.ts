import { afterEach, assert, describe, it } from "vitest"
import { expectedFlyAuthorization, FakeFly } from "../src/FakeFly.ts"
import { ulidTime } from "../src/Ulid.ts"

const NOW = 1_757_505_787_751
const TOKEN = "FlyV1 fm2_abc,fo1_user"
const AUTH = { authorization: "FlyV1 fm2_abc" }

let fly: FakeFly
const setup = async () => {
  fly = await FakeFly.start({ token: TOKEN, org: "acme", now: () => NOW })
  fly.addApp("web")
  fly.addMachine("web", { id: "0c7a51e4d93b28", name: "m1", region: "ams" })
  return fly
}
afterEach(() => fly?.stop())

const get = async (path: string, headers: Record<string, string> = AUTH) => {
  const res = await fetch(fly.url + path, { headers })
  return { status: res.status, body: (await res.json()) as any }
}

describe("expectedFlyAuthorization", () => {
  it("follows fly-go", () => {
    assert.strictEqual(
      expectedFlyAuthorization("FlyV1 fm2_a,fm2_b"),
      "FlyV1 fm2_a,fm2_b",
    )
    assert.strictEqual(expectedFlyAuthorization("Bearer fo1_x"), "Bearer fo1_x")
    assert.strictEqual(expectedFlyAuthorization(" tok123 "), "Bearer tok123")
    assert.strictEqual(
      expectedFlyAuthorization("FlyV1 fm2_a,fo1_b"),
      "FlyV1 fm2_a",
    )
    assert.strictEqual(
      expectedFlyAuthorization("bearer FLYV1 fm1r_x, fm1a_y"),
      "FlyV1 fm1r_x,fm1a_y",
    )
  })

  it("rejects any other header with 401 and records it", async () => {
    await setup()
    const wrong = await get("/v1/apps?org_slug=acme", {
      authorization: "Bearer fm2_abc",
    })
    const right = await get("/v1/apps?org_slug=acme")
    assert.deepStrictEqual(wrong, {
      status: 401,
      body: { error: "token rejected" },
    })
    assert.strictEqual(right.status, 200)
    assert.deepStrictEqual(
      fly.requests.map((r) => [r.authorization, r.status]),
      [
        ["Bearer fm2_abc", 401],
        ["FlyV1 fm2_abc", 200],
      ],
    )
  })
})

describe("FakeFly", () => {
  it("lists apps of the org only", async () => {
    await setup()
    const ok = await get("/v1/apps?org_slug=acme")
    const wrong = await get("/v1/apps?org_slug=other")
    assert.strictEqual(ok.status, 200)
    assert.deepStrictEqual(ok.body.total_apps, 1)
    const { id, ...app } = ok.body.apps[0]
    assert.match(id, /^[0-9a-f]{16}$/)
    assert.deepStrictEqual(app, {
      name: "web",
      machine_count: 1,
      volume_count: 0,
      network: "default",
      organization: { name: "acme", slug: "acme" },
    })
    assert.deepStrictEqual(wrong, {
      status: 404,
      body: { error: "organization not found" },
    })
  })

  it("embeds only the 5 newest events, newest first", async () => {
    await setup()
    const emitted = Array.from({ length: 7 }, (_, i) =>
      i % 2 === 0 ? fly.start("0c7a51e4d93b28") : fly.exit("0c7a51e4d93b28"),
    )
    const { body } = await get("/v1/apps/web/machines")
    const events = body[0].events
    assert.deepStrictEqual(events, emitted.slice(2).reverse())
    assert.deepStrictEqual(
      events.map((e: { timestamp: number }) => e.timestamp),
      [NOW + 6, NOW + 5, NOW + 4, NOW + 3, NOW + 2],
    )
    assert.strictEqual(body[0].state, "started")
    assert.strictEqual(ulidTime(events[0].id), NOW + 6)
    assert.strictEqual(events[0].id.length, 26)
  })

  it("serves /events with limit default 20, max 50", async () => {
    await setup()
    for (let i = 0; i < 60; i++) {
      fly.emit("0c7a51e4d93b28", { type: "update", status: "replacing" })
    }
    const path = "/v1/apps/web/machines/0c7a51e4d93b28/events"
    const all = fly.history("0c7a51e4d93b28")
    assert.deepStrictEqual((await get(path)).body, all.slice(0, 20))
    assert.deepStrictEqual((await get(`${path}?limit=3`)).body, all.slice(0, 3))
    assert.strictEqual((await get(`${path}?limit=500`)).body.length, 50)
    assert.deepStrictEqual(await get("/v1/apps/web/machines/nope/events"), {
      status: 404,
      body: { error: "machine not found" },
    })
  })

  it("shapes exit events, and hides destroyed machines by default", async () => {
    await setup()
    const exit = fly.exit("0c7a51e4d93b28", {
      oomKilled: true,
      monitorEvent: true,
    })
    assert.deepStrictEqual(exit.request, {
      MonitorEvent: {
        exit_event: {
          exit_code: 137,
          guest_exit_code: 0,
          guest_signal: -1,
          signal: -1,
          oom_killed: true,
          requested_stop: false,
          restarting: false,
          exited_at: new Date(NOW).toISOString(),
        },
      },
      restart_count: 0,
    })
    const bare = fly.emit("0c7a51e4d93b28", {
      type: "restart",
      status: "stopping",
      id: null,
    })
    assert.deepStrictEqual(bare, {
      type: "restart",
      status: "stopping",
      source: "user",
      timestamp: NOW + 1,
    })
    fly.destroy("0c7a51e4d93b28")
    assert.deepStrictEqual((await get("/v1/apps/web/machines")).body, [])
    const deleted = await get("/v1/apps/web/machines?include_deleted=true")
    assert.strictEqual(deleted.body[0].state, "destroyed")
    const summary = await get(
      "/v1/apps/web/machines?include_deleted=1&summary=true",
    )
    assert.deepStrictEqual(Object.keys(summary.body[0]), [
      "id",
      "name",
      "state",
      "region",
      "instance_id",
      "private_ip",
      "image_ref",
      "created_at",
      "updated_at",
    ])
    assert.deepStrictEqual(await get("/v1/apps/nope/machines"), {
      status: 404,
      body: { error: "app not found" },
    })
  })

  it("serves raw payloads and scripted faults in order", async () => {
    await setup()
    fly.setRaw("0c7a51e4d93b28", { id: 42, events: "nope" })
    fly.failNext(
      { path: /\/machines$/, method: "GET" },
      { status: 503, body: "upstream down", times: 2 },
    )
    fly.failNext(
      { path: /\/apps$/ },
      { status: 429, headers: { "Retry-After": "2" } },
    )
    const statuses: number[] = []
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${fly.url}/v1/apps/web/machines`, {
        headers: AUTH,
      })
      statuses.push(res.status)
      if (i === 2)
        assert.deepStrictEqual(await res.json(), [{ id: 42, events: "nope" }])
      else assert.strictEqual(await res.text(), "upstream down")
    }
    const limited = await fetch(`${fly.url}/v1/apps?org_slug=acme`, {
      headers: AUTH,
    })
    assert.deepStrictEqual(
      [...statuses, limited.status, limited.headers.get("retry-after")],
      [503, 503, 200, 429, "2"],
    )
  })

  it("leaves a hanging request open until stop", async () => {
    await setup()
    fly.failNext({}, { status: 200, hang: true })
    const pending = fetch(`${fly.url}/v1/apps?org_slug=acme`, {
      headers: AUTH,
    }).then(
      () => "answered",
      () => "failed",
    )
    const early = await Promise.race([
      pending,
      new Promise((r) => setTimeout(() => r("still open"), 200)),
    ])
    await fly.stop()
    assert.deepStrictEqual([early, await pending], ["still open", "failed"])
    assert.strictEqual(fly.requests[0]?.status, 0)
  })
})
