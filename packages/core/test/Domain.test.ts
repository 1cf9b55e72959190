import { assert, describe, it } from "@effect/vitest"
import { Schema } from "effect"
import {
  eventKey,
  exitDetailsOf,
  Machine,
  MachineEvent,
  sizeLabel,
} from "../src/Domain.ts"
import events2023 from "./fixtures/machine-events-endpoint-exit-requested-stop.2023-09.json"
import started2025 from "./fixtures/machine-get-started-event-ids-empty-request.2025-09.json"
import stopped2022 from "./fixtures/machine-get-stopped-exit-event-exitedat-ms.2022-docs.json"
import list2023 from "./fixtures/machines-list-two-started-with-checks.2023-docs.json"

const decodeMachine = Schema.decodeUnknownSync(Machine)
const decodeEvents = Schema.decodeUnknownSync(Schema.Array(MachineEvent))

describe("Fly payloads", () => {
  it("decodes a 2025 machine with event ids and an empty start request", () => {
    const machine = decodeMachine(started2025)
    assert.strictEqual(machine.id, "0c7a51e4d93b28")
    assert.strictEqual(machine.state, "started")
    assert.strictEqual(machine.region, "ams")
    assert.strictEqual(machine.size, "shared-cpu-1x 256MB")
    assert.deepStrictEqual(
      machine.events.map((e) => [eventKey(machine.id, e), e.type, e.status]),
      [
        ["01K4SR45V786H3N42CM40E1PXY", "start", "started"],
        ["01K4SR432JK769A6B6QDD5P948", "launch", "created"],
      ],
    )
    assert.strictEqual(exitDetailsOf(machine.events[0]!.request), undefined)
  })

  it("decodes a 2022 machine: no ids, exited_at in milliseconds", () => {
    const machine = decodeMachine(stopped2022)
    const exit = machine.events[0]!
    assert.strictEqual(
      eventKey(machine.id, exit),
      "3d8e41f2a7c905:1653346106636:exit:stopped:flyd",
    )
    assert.deepStrictEqual(exitDetailsOf(exit.request), {
      exitCode: 127,
      oomKilled: false,
      requestedStop: false,
      restartCount: 0,
      error: null,
    })
  })

  it("decodes the /events endpoint: exit 143 on a requested stop", () => {
    const [exit] = decodeEvents(events2023)
    assert.strictEqual(exit!.id, "01H9QFJCZ071BQ3KTZ182M3T84")
    assert.deepStrictEqual(exitDetailsOf(exit!.request), {
      exitCode: 143,
      oomKilled: false,
      requestedStop: true,
      restartCount: 0,
      error: null,
    })
  })

  it("decodes a machine list whose config is empty", () => {
    const machines = Schema.decodeUnknownSync(Schema.Array(Machine))(list2023)
    assert.deepStrictEqual(
      machines.map((m) => [m.id, m.name, m.state, m.size, m.events.length]),
      [
        ["7b21c9e04f3a5d1", "calm-river-2649", "started", "unknown", 2],
        ["5e903ab7d21c846", "bright-hill-916", "started", "unknown", 2],
      ],
    )
  })

  it("reads exit details from the older MonitorEvent shape", () => {
    assert.deepStrictEqual(
      exitDetailsOf({
        MonitorEvent: {
          exit_event: {
            exit_code: 137,
            oom_killed: true,
            exited_at: "2022-11-02T10:00:00Z",
          },
        },
        restart_count: 3,
      }),
      {
        exitCode: 137,
        oomKilled: true,
        requestedStop: false,
        restartCount: 3,
        error: null,
      },
    )
  })

  it("accepts unknown types, statuses, sources and extra fields", () => {
    const [event] = decodeEvents([
      {
        type: "suspend",
        status: "suspending",
        source: "fly-proxy",
        timestamp: 1,
        brand_new_field: { x: 1 },
      },
    ])
    assert.deepStrictEqual(
      [event!.type, event!.status, event!.source],
      ["suspend", "suspending", "fly-proxy"],
    )
  })

  it("rejects a machine whose required fields have the wrong type", () => {
    assert.throws(() => decodeMachine({ id: "m1", state: 5 }))
    assert.throws(() =>
      decodeMachine({ id: "m1", state: "started", events: [{ type: "x" }] }),
    )
  })

  it("names sizes the way flyctl does", () => {
    assert.strictEqual(
      sizeLabel({ cpu_kind: "performance", cpus: 2, memory_mb: 4096 }),
      "performance-2x 4096MB",
    )
    assert.strictEqual(
      sizeLabel({ cpu_kind: "", cpus: 1, memory_mb: 256 }),
      "shared-cpu-1x 256MB",
    )
    assert.strictEqual(sizeLabel(undefined), "unknown")
  })
})
