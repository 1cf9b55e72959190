import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, type Layer } from "effect"
import { EventStore, type NewEvent } from "../src/EventStore.ts"

// One suite, run on every real driver the monitor ships with: bun:sqlite in
// packages/core and D1 inside workerd in apps/worker.

const machine = {
  id: "m1",
  app: "shop",
  name: "web-1",
  region: "ams",
  size: "shared-cpu-1x 256MB",
  state: "started",
  lastEventKey: "e2",
  lastEventAt: 2000,
  guest: { cpu_kind: "shared", cpus: 1, memory_mb: 256 },
}

const event = (key: string, timestamp: number, type = "start"): NewEvent => ({
  key,
  machineId: "m1",
  app: "shop",
  type,
  status: type === "exit" ? "stopped" : "started",
  source: "flyd",
  timestamp,
  exit:
    type === "exit"
      ? {
          exitCode: 1,
          oomKilled: true,
          requestedStop: false,
          restartCount: 2,
          error: "boom",
        }
      : undefined,
})

export const eventStoreSuite = (
  name: string,
  layer: Layer.Layer<EventStore | SqlClient.SqlClient, unknown>,
) =>
  describe(`EventStore on ${name}`, () => {
    it.effect("stores each event once and says which were new", () =>
      Effect.gen(function* () {
        const store = yield* EventStore
        const first = yield* store.insertEvents(
          [event("e1", 1000), event("e2", 2000, "exit")],
          { now: 5000, baseline: false },
        )
        const again = yield* store.insertEvents(
          [event("e2", 2000, "exit"), event("e3", 3000)],
          { now: 6000, baseline: false },
        )
        assert.deepStrictEqual(first, ["e1", "e2"])
        assert.deepStrictEqual(again, ["e3"])
        const sql = yield* SqlClient.SqlClient
        const rows = yield* sql`SELECT key, type, exit_code, oom_killed,
          requested_stop, restart_count, exit_error, first_seen_at,
          notified_at, baseline FROM events ORDER BY key`
        assert.deepStrictEqual(rows, [
          {
            key: "e1",
            type: "start",
            exit_code: null,
            oom_killed: null,
            requested_stop: null,
            restart_count: null,
            exit_error: null,
            first_seen_at: 5000,
            notified_at: null,
            baseline: 0,
          },
          {
            key: "e2",
            type: "exit",
            exit_code: 1,
            oom_killed: 1,
            requested_stop: 0,
            restart_count: 2,
            exit_error: "boom",
            first_seen_at: 5000,
            notified_at: null,
            baseline: 0,
          },
          {
            key: "e3",
            type: "start",
            exit_code: null,
            oom_killed: null,
            requested_stop: null,
            restart_count: null,
            exit_error: null,
            first_seen_at: 6000,
            notified_at: null,
            baseline: 0,
          },
        ])
      }).pipe(Effect.provide(layer)),
    )

    it.effect(
      "claims undelivered events oldest first, with their machine",
      () =>
        Effect.gen(function* () {
          const store = yield* EventStore
          yield* store.saveMachine(machine, 1)
          yield* store.insertEvents([event("old", 10, "start")], {
            now: 100,
            baseline: true,
          })
          yield* store.insertEvents(
            [event("b", 2000, "exit"), event("a", 1000)],
            { now: 100, baseline: false },
          )
          const claimed = yield* store.claimUndelivered({
            now: 200,
            claimMs: 1000,
            limit: 10,
          })
          assert.deepStrictEqual(claimed, [
            {
              key: "a",
              machineId: "m1",
              app: "shop",
              type: "start",
              status: "started",
              source: "flyd",
              timestamp: 1000,
              exit: undefined,
              machineName: "web-1",
              region: "ams",
              size: "shared-cpu-1x 256MB",
              guest: { cpu_kind: "shared", cpus: 1, memory_mb: 256 },
              ranMs: undefined,
            },
            {
              key: "b",
              machineId: "m1",
              app: "shop",
              type: "exit",
              status: "stopped",
              source: "flyd",
              timestamp: 2000,
              exit: {
                exitCode: 1,
                oomKilled: true,
                requestedStop: false,
                restartCount: 2,
                error: "boom",
              },
              machineName: "web-1",
              region: "ams",
              size: "shared-cpu-1x 256MB",
              guest: { cpu_kind: "shared", cpus: 1, memory_mb: 256 },
              ranMs: undefined,
            },
          ])
          const whileClaimed = yield* store.claimUndelivered({
            now: 500,
            claimMs: 1000,
            limit: 10,
          })
          assert.deepStrictEqual(whileClaimed, [])
          const afterExpiry = yield* store.claimUndelivered({
            now: 1201,
            claimMs: 1000,
            limit: 1,
          })
          assert.deepStrictEqual(
            afterExpiry.map((e) => e.key),
            ["a"],
          )
        }).pipe(Effect.provide(layer)),
    )

    it.effect("never hands out a delivered event; a released one again", () =>
      Effect.gen(function* () {
        const store = yield* EventStore
        yield* store.insertEvents([event("a", 1), event("b", 2)], {
          now: 10,
          baseline: false,
        })
        const claimed = yield* store.claimUndelivered({
          now: 20,
          claimMs: 60_000,
          limit: 10,
        })
        yield* store.markNotified(["a"], 30)
        yield* store.release(["b"])
        const next = yield* store.claimUndelivered({
          now: 40,
          claimMs: 60_000,
          limit: 10,
        })
        assert.deepStrictEqual(
          claimed.map((e) => e.key),
          ["a", "b"],
        )
        assert.deepStrictEqual(
          next.map((e) => e.key),
          ["b"],
        )
        const sql = yield* SqlClient.SqlClient
        const rows = yield* sql`SELECT key, notified_at, claimed_until
          FROM events ORDER BY key`
        assert.deepStrictEqual(rows, [
          { key: "a", notified_at: 30, claimed_until: null },
          { key: "b", notified_at: null, claimed_until: 60_040 },
        ])
      }).pipe(Effect.provide(layer)),
    )

    it.effect("marks more keys than one statement may bind", () =>
      Effect.gen(function* () {
        const store = yield* EventStore
        const many = Array.from({ length: 120 }, (_, i) =>
          event(`k${String(i).padStart(3, "0")}`, i),
        )
        yield* store.insertEvents(many, { now: 1, baseline: false })
        const claimed = yield* store.claimUndelivered({
          now: 2,
          claimMs: 1000,
          limit: 200,
        })
        yield* store.markNotified(
          claimed.map((e) => e.key),
          3,
        )
        const sql = yield* SqlClient.SqlClient
        const rows = yield* sql`SELECT COUNT(*) AS n FROM events
          WHERE notified_at = 3`
        assert.strictEqual(claimed.length, 120)
        assert.deepStrictEqual(rows, [{ n: 120 }])
      }).pipe(Effect.provide(layer)),
    )

    it.effect("remembers machines; the high-water mark never goes back", () =>
      Effect.gen(function* () {
        const store = yield* EventStore
        yield* store.saveMachine(machine, 1)
        yield* store.saveMachine(
          {
            ...machine,
            state: "stopped",
            lastEventKey: "older",
            lastEventAt: 1500,
          },
          2,
        )
        const machines = yield* store.machines()
        assert.deepStrictEqual(
          [...machines.values()],
          [{ ...machine, state: "stopped" }],
        )
      }).pipe(Effect.provide(layer)),
    )

    it.effect("keeps small facts in meta; a claim succeeds once", () =>
      Effect.gen(function* () {
        const store = yield* EventStore
        assert.strictEqual(yield* store.getMeta("cursor"), undefined)
        yield* store.setMeta("cursor", "app-b", 1)
        yield* store.setMeta("cursor", "app-c", 2)
        assert.strictEqual(yield* store.getMeta("cursor"), "app-c")
        assert.strictEqual(yield* store.claimMeta("once", "x", 3), true)
        assert.strictEqual(yield* store.claimMeta("once", "y", 4), false)
        yield* store.deleteMeta("once")
        assert.strictEqual(yield* store.claimMeta("once", "z", 5), true)
        assert.strictEqual(yield* store.getMeta("once"), "z")
      }).pipe(Effect.provide(layer)),
    )
  })
