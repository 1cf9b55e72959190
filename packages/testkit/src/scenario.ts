import type { FakeFly, FakeGuest } from "./FakeFly.ts"

export const demoOrg = "demo-org"

export const demoMachines = {
  shopWebAms: "148ed193b95089",
  shopWebIad: "6e82d443a95d78",
  worker: "3287d113f05e98",
  sandbox: "e2865097b6d428",
  bait: "91857e3f2c6d04",
} as const

/** A name built to break an alert that forgets to escape Fly data. */
export const baitMachineName = "@everyone **boom** <@123> _x_ `y` [z](http://a)"

const sharedCpu1x: FakeGuest = { cpu_kind: "shared", cpus: 1, memory_mb: 256 }
const sharedCpu2x: FakeGuest = { cpu_kind: "shared", cpus: 2, memory_mb: 512 }
const performance2x: FakeGuest = {
  cpu_kind: "performance",
  cpus: 2,
  memory_mb: 4096,
}

const HOUR = 3_600_000
const DAY = 24 * HOUR

/**
 * Apps and machines with a few days of back-dated history, so the first poll
 * has something to baseline: shop-web (one started, one autostopped),
 * shop-worker (a stopped performance-2x), dev-sandbox (a forgotten started
 * machine and one with a hostile name).
 */
export const createDemoOrg = (fly: FakeFly): void => {
  const now = fly.now()
  const launch = (id: string, at: number) => {
    fly.emit(id, { type: "launch", status: "created", timestamp: at })
    fly.emit(id, {
      type: "start",
      status: "started",
      request: {},
      timestamp: at + 2_000,
    })
  }

  fly.addApp("shop-web")
  fly.addMachine("shop-web", {
    id: demoMachines.shopWebAms,
    name: "wandering-meadow-4821",
    region: "ams",
    guest: sharedCpu1x,
  })
  launch(demoMachines.shopWebAms, now - 6 * DAY)
  fly.emit(demoMachines.shopWebAms, {
    type: "update",
    status: "replacing",
    timestamp: now - 2 * DAY,
  })
  fly.exit(demoMachines.shopWebAms, {
    requestedStop: true,
    timestamp: now - 2 * DAY + 1_000,
  })
  fly.emit(demoMachines.shopWebAms, {
    type: "start",
    status: "started",
    request: {},
    timestamp: now - 2 * DAY + 3_000,
  })
  fly.addMachine("shop-web", {
    id: demoMachines.shopWebIad,
    name: "silent-thunder-1307",
    region: "iad",
    guest: sharedCpu1x,
  })
  launch(demoMachines.shopWebIad, now - 6 * DAY + 5_000)
  fly.exit(demoMachines.shopWebIad, {
    requestedStop: true,
    timestamp: now - DAY,
  })

  fly.addApp("shop-worker")
  fly.addMachine("shop-worker", {
    id: demoMachines.worker,
    name: "rough-lake-5530",
    region: "fra",
    guest: performance2x,
  })
  launch(demoMachines.worker, now - 10 * DAY)
  fly.exit(demoMachines.worker, { exitCode: 0, timestamp: now - 9 * DAY })

  fly.addApp("dev-sandbox")
  fly.addMachine("dev-sandbox", {
    id: demoMachines.sandbox,
    name: "scratch-box-1180",
    region: "sjc",
    guest: sharedCpu2x,
  })
  launch(demoMachines.sandbox, now - 21 * DAY)
  fly.addMachine("dev-sandbox", {
    id: demoMachines.bait,
    name: baitMachineName,
    region: "lhr",
    guest: sharedCpu1x,
  })
  launch(demoMachines.bait, now - 3 * DAY)
  fly.exit(demoMachines.bait, {
    requestedStop: true,
    timestamp: now - 3 * DAY + HOUR,
  })
}

export const demoTicks: Array<{
  label: string
  apply: (fly: FakeFly) => void
}> = [
  {
    label: "dev-sandbox: the machine with the hostile name starts",
    apply: (fly) => {
      fly.start(demoMachines.bait)
    },
  },
  {
    label: "shop-worker: a job crashes with exit code 1",
    apply: (fly) => {
      fly.start(demoMachines.worker)
      fly.exit(demoMachines.worker, { exitCode: 1 })
    },
  },
  {
    label: "shop-web: iad machine crash-loops (start/exit x3, tail truncated)",
    apply: (fly) => {
      for (let i = 0; i < 3; i++) {
        fly.start(demoMachines.shopWebIad)
        fly.exit(demoMachines.shopWebIad, {
          exitCode: 1,
          restarting: i < 2,
          restartCount: i,
        })
      }
    },
  },
  {
    label: "shop-worker: OOM kill (older MonitorEvent exit shape)",
    apply: (fly) => {
      fly.start(demoMachines.worker)
      fly.exit(demoMachines.worker, { oomKilled: true, monitorEvent: true })
    },
  },
  {
    label: "shop-worker: new image deployed while stopped (update + launch)",
    apply: (fly) => {
      fly.emit(demoMachines.worker, { type: "update", status: "replacing" })
      fly.emit(demoMachines.worker, { type: "launch", status: "created" })
    },
  },
  {
    label: "idle: nothing happens",
    apply: () => {},
  },
  {
    label: "dev-sandbox: forgotten machine stopped on request, then destroyed",
    apply: (fly) => {
      fly.exit(demoMachines.sandbox, { requestedStop: true })
      fly.destroy(demoMachines.sandbox)
    },
  },
]
