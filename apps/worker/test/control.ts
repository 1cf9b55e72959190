import { env } from "cloudflare:test"

// Shapes of packages/testkit/src/Control.ts answers. Restated here because
// that file imports node:http, which this workerd-side tsconfig cannot see.

export interface FakeUrls {
  readonly flyUrl: string
  readonly webhookUrl: string
}

export interface FakeEvent {
  readonly id: string
  readonly type: string
  readonly status: string
  readonly source: string
  readonly timestamp: number
}

export interface FlyRequest {
  readonly method: string
  readonly path: string
  readonly status: number
}

export interface Embed {
  readonly title: string
  readonly fields: ReadonlyArray<{ name: string; value: string }>
  readonly footer: { readonly text: string }
}

export interface DiscordMessage {
  readonly content?: string
  readonly embeds?: ReadonlyArray<Embed>
}

const call = async <A = unknown>(
  method: "GET" | "POST",
  path: string,
  body?: unknown,
): Promise<A> => {
  const response = await fetch(`${env.CONTROL_URL}${path}`, {
    method,
    ...(body === undefined
      ? {}
      : {
          body: JSON.stringify(body),
          headers: { "content-type": "application/json" },
        }),
  })
  const answer = (await response.json()) as A & { error?: string }
  if (!response.ok)
    throw new Error(`control ${method} ${path}: ${answer.error ?? "failed"}`)
  return answer
}

/** The fakes in the Node process, scripted over HTTP on 127.0.0.1. */
export const control = {
  reset: () => call<FakeUrls>("POST", "/reset"),
  addApp: (name: string) => call("POST", "/fly/addApp", { name }),
  addMachine: (machine: {
    app: string
    id: string
    name: string
    region: string
    guest?: { cpu_kind: string; cpus: number; memory_mb: number }
  }) => call("POST", "/fly/addMachine", machine),
  emit: (event: {
    machineId: string
    type: string
    status: string
    timestamp?: number
    request?: unknown
  }) => call<FakeEvent>("POST", "/fly/emit", event),
  start: (machineId: string) =>
    call<FakeEvent>("POST", "/fly/start", { machineId }),
  exit: (
    machineId: string,
    options: {
      exitCode?: number
      oomKilled?: boolean
      requestedStop?: boolean
      timestamp?: number
    },
  ) => call<FakeEvent>("POST", "/fly/exit", { machineId, ...options }),
  failNext: (fault: {
    path?: string
    method?: string
    status: number
    times?: number
    body?: string
  }) => call("POST", "/fly/failNext", fault),
  latency: (ms: number) => call("POST", "/fly/latency", { ms }),
  flyRequests: () => call<Array<FlyRequest>>("GET", "/fly/requests"),
  discordMessages: () =>
    call<Array<DiscordMessage>>("GET", "/discord/messages"),
}
