import { randomBytes } from "node:crypto"
import * as http from "node:http"
import { listenLocal, parseBoolean, type LocalServer } from "./LocalServer.ts"
import {
  machineJson,
  type App,
  type FakeEvent,
  type FakeGuest,
  type Machine,
} from "./FakeFlyModel.ts"
import { ulid } from "./Ulid.ts"

export type { FakeEvent, FakeGuest } from "./FakeFlyModel.ts"

export interface FakeFlyRequest {
  method: string
  path: string
  query: Record<string, string>
  authorization: string | undefined
  /** 0 while unanswered (a hanging fault never gets one). */
  status: number
}

export interface FakeFlyFault {
  status: number
  body?: string
  headers?: Record<string, string>
  times?: number
  delayMs?: number
  hang?: boolean
}

export interface FakeExitOptions {
  /** Defaults to 137 when `oomKilled`, 143 when `requestedStop`, else 0. */
  exitCode?: number
  oomKilled?: boolean
  requestedStop?: boolean
  monitorEvent?: boolean
  restarting?: boolean
  restartCount?: number
  /** Back-dates the event; defaults to the next tick of `now`. */
  timestamp?: number
  /** Who asked; "flyd" unless given. */
  source?: string
}

const SCHEME = /^(?:flyv1|bearer)\s+/i
const MACAROON = /^(?:fm1r|fm1a|fm2)_/

/** The Authorization header fly-go would send for `token`. */
export const expectedFlyAuthorization = (token: string): string => {
  let rest = token.trim()
  while (SCHEME.test(rest)) rest = rest.replace(SCHEME, "").trim()
  const macaroons = rest
    .split(",")
    .map((piece) => piece.trim())
    .filter((piece) => MACAROON.test(piece))
  return macaroons.length > 0
    ? `FlyV1 ${macaroons.join(",")}`
    : `Bearer ${rest}`
}

const STATE_AFTER: Record<string, string> = {
  start: "started",
  exit: "stopped",
  stop: "stopped",
  destroy: "destroyed",
  suspend: "suspended",
  launch: "created",
}

interface Fault extends FakeFlyFault {
  match: { path?: RegExp; method?: string }
  remaining: number
}

const errorBody = (error: string) => JSON.stringify({ error })

// A bad escape must become a 404, not an exception inside the listener.
const safeDecode = (segment: string) => {
  try {
    return decodeURIComponent(segment)
  } catch {
    return segment
  }
}

/**
 * One org (`token` and `org`), several (`orgs`: slug → token), or both.
 * Each org's apps answer only to that org's token.
 */
export interface FakeFlyOptions {
  readonly token?: string
  readonly org?: string
  readonly orgs?: Readonly<Record<string, string>>
  readonly now?: () => number
}

export class FakeFly {
  readonly url: string
  readonly requests: FakeFlyRequest[] = []
  /** Machines stopped through the API, in order. */
  readonly stopped: string[] = []
  latencyMs = 0
  /** The clock events and timestamps are taken from. */
  readonly now: () => number

  private readonly apps = new Map<string, App>()
  private readonly machines = new Map<string, Machine>()
  private readonly faults: Fault[] = []
  /** Org slug → the Authorization header its token makes. */
  private readonly authorizations = new Map<string, string>()
  /** App name → its org. */
  private readonly appOrgs = new Map<string, string>()
  /** Where `addApp` puts an app when no org is named. */
  private readonly defaultOrg: string

  private constructor(
    private readonly server: LocalServer,
    options: FakeFlyOptions,
  ) {
    this.url = server.url
    if (options.org !== undefined && options.token !== undefined)
      this.authorizations.set(
        options.org,
        expectedFlyAuthorization(options.token),
      )
    for (const [org, token] of Object.entries(options.orgs ?? {}))
      this.authorizations.set(org, expectedFlyAuthorization(token))
    const first = [...this.authorizations.keys()][0]
    if (first === undefined)
      throw new Error("FakeFly: give `token` and `org`, or `orgs`")
    this.defaultOrg = first
    this.now = options.now ?? Date.now
  }

  static async start(options: FakeFlyOptions): Promise<FakeFly> {
    let fly: FakeFly | undefined
    const server = await listenLocal((req, res) => fly?.handle(req, res))
    try {
      fly = new FakeFly(server, options)
    } catch (error) {
      await server.close()
      throw error
    }
    return fly
  }

  /** Adds an app to `options.org`, or to the first org. */
  addApp(name: string, options: { org?: string } = {}): void {
    if (this.apps.has(name)) throw new Error(`FakeFly: app ${name} exists`)
    const org = options.org ?? this.defaultOrg
    if (!this.authorizations.has(org)) throw new Error(`FakeFly: no org ${org}`)
    const id = randomBytes(8).toString("hex")
    this.apps.set(name, { id, name, machines: [] })
    this.appOrgs.set(name, org)
  }

  /** Replaces an org's token: the old one is rejected from now on. */
  setToken(org: string, token: string): void {
    if (!this.authorizations.has(org)) throw new Error(`FakeFly: no org ${org}`)
    this.authorizations.set(org, expectedFlyAuthorization(token))
  }

  addMachine(
    app: string,
    m: {
      id: string
      name: string
      region: string
      guest?: FakeGuest
      state?: string
    },
  ): void {
    const owner = this.apps.get(app)
    if (owner === undefined) throw new Error(`FakeFly: no app ${app}`)
    if (this.machines.has(m.id)) {
      throw new Error(`FakeFly: machine ${m.id} exists`)
    }
    const now = this.now()
    const n = this.machines.size + 1
    const machine: Machine = {
      app,
      id: m.id,
      name: m.name,
      region: m.region,
      guest: m.guest ?? { cpu_kind: "shared", cpus: 1, memory_mb: 256 },
      privateIp: `fdaa:0:2b3c:a7b:${(0x100 + n).toString(16)}:${n.toString(16)}:0:2`,
      state: m.state ?? "stopped",
      instanceId: ulid(now),
      imageTag: `deployment-${ulid(now)}`,
      imageDigest: `sha256:${randomBytes(32).toString("hex")}`,
      createdAt: now,
      updatedAt: now,
      lastTimestamp: 0,
      events: [],
      raw: undefined,
    }
    owner.machines.push(machine)
    this.machines.set(m.id, machine)
  }

  emit(
    machineId: string,
    e: {
      type: string
      status: string
      source?: string
      id?: string | null
      timestamp?: number
      request?: unknown
    },
  ): FakeEvent {
    const m = this.machine(machineId)
    const timestamp = e.timestamp ?? this.nextTimestamp(m)
    const event: FakeEvent = {
      ...(e.id === null ? {} : { id: e.id ?? ulid(timestamp) }),
      type: e.type,
      status: e.status,
      ...(e.request === undefined ? {} : { request: e.request }),
      source:
        e.source ?? (e.type === "start" || e.type === "exit" ? "flyd" : "user"),
      timestamp,
    }
    m.events.unshift(event)
    m.lastTimestamp = Math.max(m.lastTimestamp, timestamp)
    m.createdAt = Math.min(m.createdAt, timestamp)
    // Back-dated history must not leave updated_at at the time of addMachine.
    m.updatedAt =
      m.events.length === 1 ? timestamp : Math.max(m.updatedAt, timestamp)
    m.state = STATE_AFTER[e.type] ?? m.state
    if (e.type === "update") {
      m.instanceId = ulid(timestamp)
      m.imageTag = `deployment-${ulid(timestamp)}`
      m.imageDigest = `sha256:${randomBytes(32).toString("hex")}`
    }
    return event
  }

  start(machineId: string): FakeEvent {
    return this.emit(machineId, {
      type: "start",
      status: "started",
      source: "flyd",
      request: {},
    })
  }

  exit(machineId: string, opts: FakeExitOptions = {}): FakeEvent {
    const timestamp =
      opts.timestamp ?? this.nextTimestamp(this.machine(machineId))
    const exitEvent = {
      exit_code:
        opts.exitCode ?? (opts.oomKilled ? 137 : opts.requestedStop ? 143 : 0),
      guest_exit_code: 0,
      guest_signal: -1,
      signal: -1,
      oom_killed: opts.oomKilled ?? false,
      requested_stop: opts.requestedStop ?? false,
      restarting: opts.restarting ?? false,
      exited_at: new Date(timestamp).toISOString(),
    }
    const restart_count = opts.restartCount ?? 0
    return this.emit(machineId, {
      type: "exit",
      status: "stopped",
      source: opts.source ?? "flyd",
      timestamp,
      request: opts.monitorEvent
        ? { MonitorEvent: { exit_event: exitEvent }, restart_count }
        : { exit_event: exitEvent, restart_count },
    })
  }

  destroy(machineId: string): void {
    this.emit(machineId, { type: "destroy", status: "destroyed" })
  }

  setRaw(machineId: string, raw: unknown | undefined): void {
    this.machine(machineId).raw = raw === undefined ? undefined : { value: raw }
  }

  failNext(
    match: { path?: RegExp; method?: string },
    response: FakeFlyFault,
  ): void {
    this.faults.push({ ...response, match, remaining: response.times ?? 1 })
  }

  /** Current state of a machine, as the list endpoint reports it. */
  stateOf(machineId: string): string {
    return this.machine(machineId).state
  }

  /** The full event history of a machine, newest first. */
  history(machineId: string): FakeEvent[] {
    return [...this.machine(machineId).events]
  }

  stop(): Promise<void> {
    return this.server.close()
  }

  private machine(id: string): Machine {
    const m = this.machines.get(id)
    if (m === undefined) throw new Error(`FakeFly: no machine ${id}`)
    return m
  }

  private nextTimestamp(m: Machine): number {
    const now = Math.floor(this.now())
    return now > m.lastTimestamp ? now : m.lastTimestamp + 1
  }

  private takeFault(method: string, path: string): Fault | undefined {
    const index = this.faults.findIndex((f) => {
      if (f.match.method && f.match.method.toUpperCase() !== method) {
        return false
      }
      if (f.match.path) {
        f.match.path.lastIndex = 0
        return f.match.path.test(path)
      }
      return true
    })
    const fault = this.faults[index]
    if (fault === undefined) return undefined
    fault.remaining -= 1
    if (fault.remaining <= 0) this.faults.splice(index, 1)
    return fault
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    req.resume()
    const url = new URL(req.url ?? "/", "http://127.0.0.1")
    const method = (req.method ?? "GET").toUpperCase()
    const record: FakeFlyRequest = {
      method,
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      authorization: req.headers.authorization,
      status: 0,
    }
    this.requests.push(record)
    const fault = this.takeFault(method, url.pathname)
    if (fault?.hang) return
    const answer = (
      status: number,
      body: string,
      headers: Record<string, string> = {},
    ) =>
      this.server.later(this.latencyMs + (fault?.delayMs ?? 0), () => {
        record.status = status
        const merged: Record<string, string> = {
          "content-type": "application/json",
          "fly-request-id": `${ulid(Date.now()).toLowerCase()}-ams`,
        }
        for (const [k, v] of Object.entries(headers)) {
          merged[k.toLowerCase()] = v
        }
        res.writeHead(status, merged)
        res.end(body)
      })
    if (fault !== undefined) {
      const text = http.STATUS_CODES[fault.status]?.toLowerCase()
      return answer(
        fault.status,
        fault.body ?? errorBody(text ?? "injected fault"),
        fault.headers,
      )
    }
    const known = [...this.authorizations.values()]
    if (
      record.authorization === undefined ||
      !known.includes(record.authorization)
    ) {
      return answer(401, errorBody("token rejected"))
    }
    const { status, body } = this.route(method, url, record.authorization)
    answer(status, JSON.stringify(body))
  }

  private route(
    method: string,
    url: URL,
    authorization: string,
  ): { status: number; body: unknown } {
    const notFound = (error: string) => ({ status: 404, body: { error } })
    // A token of one org is no key to another's apps.
    const rejected = { status: 401, body: { error: "token rejected" } }
    const allowed = (org: string | undefined) =>
      org !== undefined && this.authorizations.get(org) === authorization
    const path = url.pathname
      .split("/")
      .filter((s) => s !== "")
      .map(safeDecode)
    if (
      method === "POST" &&
      path.length === 6 &&
      path[0] === "v1" &&
      path[1] === "apps" &&
      path[3] === "machines" &&
      path[5] === "stop"
    ) {
      if (this.apps.has(path[2] ?? "") && !allowed(this.appOrgs.get(path[2]!)))
        return rejected
      return this.stopRequest(path[2] ?? "", path[4] ?? "")
    }
    if (method !== "GET" || path[0] !== "v1" || path[1] !== "apps") {
      return notFound("not found")
    }
    if (path.length === 2) {
      const org = url.searchParams.get("org_slug") ?? ""
      if (!this.authorizations.has(org)) {
        return notFound("organization not found")
      }
      if (!allowed(org)) return rejected
      return { status: 200, body: this.listApps(org) }
    }
    if (path[3] !== "machines" || (path.length !== 4 && path.length !== 6)) {
      return notFound("not found")
    }
    if (path.length === 6 && path[5] !== "events") return notFound("not found")
    const app = this.apps.get(path[2] ?? "")
    if (app === undefined) return notFound("app not found")
    if (!allowed(this.appOrgs.get(app.name))) return rejected
    if (path.length === 4) {
      const includeDeleted = parseBoolean(
        url.searchParams.get("include_deleted"),
      )
      const summary = parseBoolean(url.searchParams.get("summary"))
      const body = app.machines
        .filter((m) => includeDeleted || m.state !== "destroyed")
        .map((m) => (m.raw ? m.raw.value : machineJson(m, summary)))
      return { status: 200, body }
    }
    const machine = app.machines.find((m) => m.id === path[4])
    if (machine === undefined) return notFound("machine not found")
    const rawLimit = url.searchParams.get("limit")
    const limit = rawLimit === null ? 20 : Number(rawLimit)
    if (!Number.isInteger(limit) || limit < 1) {
      return { status: 400, body: { error: "invalid limit" } }
    }
    return { status: 200, body: machine.events.slice(0, Math.min(limit, 50)) }
  }

  // Fly answers a stop of a machine that is not started with 412.
  private stopRequest(
    appName: string,
    machineId: string,
  ): { status: number; body: unknown } {
    const machine = this.apps
      .get(appName)
      ?.machines.find((m) => m.id === machineId)
    if (machine === undefined) {
      return { status: 404, body: { error: "machine not found" } }
    }
    if (machine.state !== "started") {
      return {
        status: 412,
        body: { error: "unable to stop machine, not currently started" },
      }
    }
    this.stopped.push(machineId)
    this.exit(machineId, { requestedStop: true, source: "user" })
    return { status: 200, body: { ok: true } }
  }

  private listApps(org: string) {
    const apps = [...this.apps.values()]
      .filter((app) => this.appOrgs.get(app.name) === org)
      .map((app) => ({
        id: app.id,
        name: app.name,
        machine_count: app.machines.filter((m) => m.state !== "destroyed")
          .length,
        volume_count: 0,
        network: "default",
        organization: { name: org, slug: org },
      }))
    return { total_apps: apps.length, apps }
  }
}
