export interface FakeGuest {
  cpu_kind: string
  cpus: number
  memory_mb: number
}

export interface FakeEvent {
  id?: string
  type: string
  status: string
  source: string
  timestamp: number
  request?: unknown
}

/** Fly truncates the events embedded in a machine to a short tail. */
const EMBEDDED_EVENTS = 5

export interface Machine {
  readonly app: string
  readonly id: string
  readonly name: string
  readonly region: string
  readonly guest: FakeGuest
  readonly privateIp: string
  state: string
  instanceId: string
  imageTag: string
  imageDigest: string
  createdAt: number
  updatedAt: number
  lastTimestamp: number
  /** Newest first, never truncated. */
  events: FakeEvent[]
  raw: { value: unknown } | undefined
}

export interface App {
  readonly id: string
  readonly name: string
  readonly machines: Machine[]
}

const rfc3339 = (ms: number) =>
  new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z")

export const machineJson = (m: Machine, summary: boolean) => {
  const image = `registry.fly.io/${m.app}:${m.imageTag}`
  return {
    id: m.id,
    name: m.name,
    state: m.state,
    region: m.region,
    instance_id: m.instanceId,
    private_ip: m.privateIp,
    ...(summary
      ? {}
      : {
          config: {
            guest: { ...m.guest },
            image,
            metadata: {},
            restart: { policy: "on-failure" },
          },
        }),
    image_ref: {
      registry: "registry.fly.io",
      repository: m.app,
      tag: m.imageTag,
      digest: m.imageDigest,
      labels: {},
    },
    created_at: rfc3339(m.createdAt),
    updated_at: rfc3339(m.updatedAt),
    ...(summary
      ? {}
      : {
          events: m.events.slice(0, EMBEDDED_EVENTS),
          host_status: "ok",
        }),
  }
}
