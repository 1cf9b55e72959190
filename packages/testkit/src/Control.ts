import type * as http from "node:http"
import { FakeDiscord, type FakeDiscordResponse } from "./FakeDiscord.ts"
import {
  FakeFly,
  type FakeExitOptions,
  type FakeFlyFault,
  type FakeGuest,
} from "./FakeFly.ts"
import { listenLocal, readBody, type LocalServer } from "./LocalServer.ts"

export interface FakeUrls {
  readonly flyUrl: string
  readonly webhookUrl: string
}

export interface AddMachineBody {
  app: string
  id: string
  name: string
  region: string
  guest?: FakeGuest
  state?: string
}

export interface EmitBody {
  machineId: string
  type: string
  status: string
  source?: string
  id?: string | null
  timestamp?: number
  request?: unknown
}

export interface FailNextBody extends FakeFlyFault {
  /** A RegExp source matched against the request path. */
  path?: string
  method?: string
}

const field = (body: unknown, name: string): string => {
  const value =
    typeof body === "object" && body !== null
      ? (body as Record<string, unknown>)[name]
      : undefined
  if (typeof value !== "string")
    throw new Error(`expected a string "${name}" in the body`)
  return value
}

/**
 * The fake Fly API and fake Discord, driven over HTTP on 127.0.0.1. Code
 * that cannot hold the fakes' objects (tests inside workerd, a script
 * around `wrangler dev`) scripts Fly and reads what Discord received here.
 *
 * POST /reset                fresh fakes, new URLs: `FakeUrls`
 * GET  /urls                 the current `FakeUrls`
 * POST /fly/addApp           `{ name }`
 * POST /fly/addMachine       `AddMachineBody`
 * POST /fly/emit             `EmitBody`, answers the event
 * POST /fly/start            `{ machineId }`, answers the event
 * POST /fly/exit             `{ machineId, ...FakeExitOptions }`, the event
 * POST /fly/destroy          `{ machineId }`
 * POST /fly/failNext         `FailNextBody`
 * POST /fly/latency          `{ ms }`, added to every Fly answer
 * GET  /fly/requests         every request the fake Fly received
 * GET  /fly/history?machine= a machine's events, newest first
 * POST /discord/respondNext  `FakeDiscordResponse`
 * GET  /discord/messages     every message the fake Discord accepted
 * GET  /discord/requests     every request the fake Discord received
 */
export class Control {
  readonly url: string

  private constructor(
    private readonly server: LocalServer,
    private readonly options: { readonly token: string; readonly org: string },
    public fly: FakeFly,
    public discord: FakeDiscord,
  ) {
    this.url = server.url
  }

  static async start(options: {
    readonly token: string
    readonly org: string
  }): Promise<Control> {
    let control: Control | undefined
    const server = await listenLocal((req, res) => {
      void control?.handle(req, res)
    })
    const fly = await FakeFly.start(options)
    const discord = await FakeDiscord.start()
    control = new Control(server, options, fly, discord)
    return control
  }

  get urls(): FakeUrls {
    return { flyUrl: this.fly.url, webhookUrl: this.discord.webhookUrl() }
  }

  /** Replaces both fakes, so nothing recorded or scripted carries over. */
  async reset(): Promise<FakeUrls> {
    await Promise.all([this.fly.stop(), this.discord.stop()])
    this.fly = await FakeFly.start(this.options)
    this.discord = await FakeDiscord.start()
    return this.urls
  }

  async stop(): Promise<void> {
    await Promise.all([
      this.server.close(),
      this.fly.stop(),
      this.discord.stop(),
    ])
  }

  private async handle(
    req: http.IncomingMessage,
    res: http.ServerResponse,
  ): Promise<void> {
    const reply = (status: number, body: unknown) => {
      res.writeHead(status, { "content-type": "application/json" })
      res.end(JSON.stringify(body ?? null))
    }
    try {
      const url = new URL(req.url ?? "/", "http://127.0.0.1")
      const text = await readBody(req)
      const body: unknown = text === "" ? {} : JSON.parse(text)
      const route = `${req.method ?? "GET"} ${url.pathname}`
      const found = this.route(route, body, url)
      if (found === undefined) return reply(404, { error: `no ${route}` })
      reply(200, await found())
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error)
      reply(400, { error: message })
    }
  }

  private route(
    route: string,
    body: unknown,
    url: URL,
  ): (() => unknown) | undefined {
    const fly = this.fly
    switch (route) {
      case "POST /reset":
        return () => this.reset()
      case "GET /urls":
        return () => this.urls
      case "POST /fly/addApp":
        return () => fly.addApp(field(body, "name"))
      case "POST /fly/addMachine":
        return () => {
          const machine = body as AddMachineBody
          fly.addMachine(field(body, "app"), {
            id: field(body, "id"),
            name: field(body, "name"),
            region: field(body, "region"),
            ...(machine.guest ? { guest: machine.guest } : {}),
            ...(machine.state ? { state: machine.state } : {}),
          })
        }
      case "POST /fly/emit":
        return () => {
          const { machineId: _, ...event } = body as EmitBody
          return fly.emit(field(body, "machineId"), event)
        }
      case "POST /fly/start":
        return () => fly.start(field(body, "machineId"))
      case "POST /fly/exit":
        return () => {
          const { machineId: _, ...options } = body as FakeExitOptions & {
            machineId: string
          }
          return fly.exit(field(body, "machineId"), options)
        }
      case "POST /fly/destroy":
        return () => fly.destroy(field(body, "machineId"))
      case "POST /fly/failNext":
        return () => {
          const { path, method, ...fault } = body as FailNextBody
          fly.failNext(
            {
              ...(path === undefined ? {} : { path: new RegExp(path) }),
              ...(method === undefined ? {} : { method }),
            },
            fault,
          )
        }
      case "POST /fly/latency":
        return () => {
          const ms = (body as { ms?: unknown }).ms
          if (typeof ms !== "number") throw new Error('expected a number "ms"')
          fly.latencyMs = ms
        }
      case "GET /fly/requests":
        return () => fly.requests
      case "GET /fly/history":
        return () => fly.history(url.searchParams.get("machine") ?? "")
      case "POST /discord/respondNext":
        return () => this.discord.respondNext(body as FakeDiscordResponse)
      case "GET /discord/messages":
        return () => this.discord.messages
      case "GET /discord/requests":
        return () => this.discord.requests
      default:
        return undefined
    }
  }
}
