import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import type * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import {
  Data,
  Duration,
  Effect,
  Either,
  Metric,
  ParseResult,
  Redacted,
  Ref,
  Schema,
} from "effect"
import { App, ListAppsResponse, Machine, MachineEvent } from "./Domain.ts"
import * as Metrics from "./Metrics.ts"
import { RetryPolicy } from "./RetryPolicy.ts"
import { FlySettings } from "./Settings.ts"

export type FlyApiErrorReason =
  | "Unauthorized"
  | "Forbidden"
  | "NotFound"
  | "RateLimited"
  | "ServerError"
  | "BadResponse"
  | "Timeout"
  | "Transport"
  /** The org a request is for is not among those configured. */
  | "UnknownOrg"

export class FlyApiError extends Data.TaggedError("FlyApiError")<{
  readonly reason: FlyApiErrorReason
  readonly path: string
  readonly status?: number
  readonly detail: string
  readonly retryAfter?: Duration.Duration
  /** Set when several orgs are watched, so the message says which one. */
  readonly org?: string
}> {
  override get message() {
    const status = this.status === undefined ? "" : ` (HTTP ${this.status})`
    const what =
      this.reason === "Unauthorized" || this.reason === "Forbidden"
        ? "token rejected"
        : this.reason
    const org = this.org === undefined ? "" : ` for org ${this.org}`
    // No request was sent: there is no path to name.
    if (this.reason === "UnknownOrg") return `Fly org unknown: ${this.detail}`
    return `Fly API ${what}${status}${org} on ${this.path}: ${this.detail}`
  }
}

const transient: ReadonlySet<FlyApiErrorReason> = new Set([
  "RateLimited",
  "ServerError",
  "Timeout",
  "Transport",
])
export const isTransient = (error: FlyApiError) => transient.has(error.reason)

/**
 * The Authorization value fly-go sends: macaroons (`fm1r_`, `fm1a_`, `fm2_`,
 * possibly several, comma-separated) as `FlyV1 …`, anything else as
 * `Bearer …`. A pasted value that already carries a scheme is accepted.
 */
export const flyAuthorization = (token: string): string => {
  let bare = token.trim()
  for (;;) {
    const stripped = bare.replace(/^(flyv1|bearer)\s+/i, "").trim()
    if (stripped === bare) break
    bare = stripped
  }
  const macaroons = bare
    .split(",")
    .map((piece) => piece.trim())
    .filter((piece) => /^(fm1r|fm1a|fm2)_/.test(piece))
  return macaroons.length > 0
    ? `FlyV1 ${macaroons.join(",")}`
    : `Bearer ${bare}`
}

const ErrorBody = Schema.Struct({
  error: Schema.optional(Schema.String),
  message: Schema.optional(Schema.String),
})

const errorDetail = (response: HttpClientResponse.HttpClientResponse) =>
  response.text.pipe(
    Effect.map((text) => {
      const parsed = Schema.decodeUnknownOption(Schema.parseJson(ErrorBody))(
        text,
      )
      const detail =
        parsed._tag === "Some"
          ? (parsed.value.error ?? parsed.value.message ?? text)
          : text
      return detail.trim().slice(0, 300) || "no details"
    }),
    Effect.orElseSucceed(() => "no details"),
  )

const reasonOf = (status: number): FlyApiErrorReason =>
  status === 401
    ? "Unauthorized"
    : status === 403
      ? "Forbidden"
      : status === 404
        ? "NotFound"
        : status === 429
          ? "RateLimited"
          : status >= 500
            ? "ServerError"
            : "BadResponse"

const retryAfterOf = (response: HttpClientResponse.HttpClientResponse) => {
  const header = response.headers["retry-after"]
  const seconds = header === undefined ? NaN : Number(header)
  return Number.isFinite(seconds) && seconds >= 0
    ? Duration.seconds(seconds)
    : undefined
}

/** A machine whose payload did not decode: left out of this pass. */
export interface SkippedMachine {
  readonly id: string | undefined
  readonly error: string
}

const idOf = (raw: unknown): string | undefined =>
  typeof raw === "object" &&
  raw !== null &&
  "id" in raw &&
  typeof raw.id === "string"
    ? raw.id
    : undefined

const decodeMachine = Schema.decodeUnknownEither(Machine)
const decodeEvent = Schema.decodeUnknownEither(MachineEvent)
const decodeApp = Schema.decodeUnknownEither(App)

/** Fly Machines API calls with one org's token. */
export interface FlyOrg {
  readonly slug: string
  readonly listApps: () => Effect.Effect<ReadonlyArray<App>, FlyApiError>
  readonly listMachines: (app: string) => Effect.Effect<
    {
      readonly machines: ReadonlyArray<Machine>
      readonly skipped: ReadonlyArray<SkippedMachine>
    },
    FlyApiError
  >
  readonly listEvents: (
    app: string,
    machineId: string,
    limit?: number,
  ) => Effect.Effect<ReadonlyArray<MachineEvent>, FlyApiError>
  /**
   * Asks Fly to stop a machine. Needs a token with write access; a
   * read-only token gets a 401/403 FlyApiError.
   */
  readonly stopMachine: (
    app: string,
    machineId: string,
  ) => Effect.Effect<void, FlyApiError>
}

export class FlyEvents extends Effect.Service<FlyEvents>()(
  "@flymon/FlyEvents",
  {
    effect: Effect.gen(function* () {
      const settings = yield* FlySettings
      const policy = yield* RetryPolicy
      const base = (yield* HttpClient.HttpClient).pipe(
        HttpClient.mapRequest((request) =>
          request.pipe(
            HttpClientRequest.prependUrl(settings.baseUrl),
            HttpClientRequest.acceptJson,
          ),
        ),
      )
      const several = settings.orgs.length > 1

      // One count for every org: a Worker invocation pays for all of them,
      // and for retries too.
      const requests = yield* Ref.make(0)

      const makeOrg = (slug: string, token: Redacted.Redacted<string>) => {
        const authorization = Redacted.make(
          flyAuthorization(Redacted.value(token)),
        )
        const client = base.pipe(
          HttpClient.mapRequest(
            HttpClientRequest.setHeader(
              "authorization",
              Redacted.value(authorization),
            ),
          ),
        )
        const orgOf = several ? { org: slug } : {}

        const requestJson = (
          method: "GET" | "POST",
          path: string,
          params: Record<string, string> = {},
        ) => {
          const query = new URLSearchParams(params).toString()
          const shown = query
            ? `${method} ${path}?${query}`
            : `${method} ${path}`
          const send =
            method === "GET"
              ? client.get(path, { urlParams: params })
              : client.post(path, { urlParams: params })
          const counted = (status: string) =>
            Metric.increment(
              Metric.tagged(Metrics.flyRequests, "status", status),
            )
          const attempt = Ref.update(requests, (n) => n + 1)
            .pipe(
              Effect.zipRight(send),
              Effect.tapBoth({
                onFailure: () => counted("error"),
                onSuccess: (response) => counted(String(response.status)),
              }),
            )
            .pipe(
              Effect.mapError(
                (cause) =>
                  new FlyApiError({
                    reason: "Transport",
                    path: shown,
                    detail: `network error (${cause.reason})`,
                    ...orgOf,
                  }),
              ),
              Effect.flatMap((response) =>
                response.status >= 200 && response.status < 300
                  ? response.json.pipe(
                      Effect.mapError(
                        () =>
                          new FlyApiError({
                            reason: "BadResponse",
                            path: shown,
                            status: response.status,
                            detail: "the body is not JSON",
                            ...orgOf,
                          }),
                      ),
                    )
                  : Effect.flatMap(errorDetail(response), (detail) => {
                      const retryAfter = retryAfterOf(response)
                      return Effect.fail(
                        new FlyApiError({
                          reason: reasonOf(response.status),
                          path: shown,
                          status: response.status,
                          detail,
                          ...(retryAfter ? { retryAfter } : {}),
                          ...orgOf,
                        }),
                      )
                    }),
              ),
              Effect.timeoutFail({
                duration: policy.requestTimeout,
                onTimeout: () =>
                  new FlyApiError({
                    reason: "Timeout",
                    path: shown,
                    detail: `no answer within ${Duration.format(policy.requestTimeout)}`,
                    ...orgOf,
                  }),
              }),
              // Fly documents no Retry-After, but honour one when it comes,
              // up to the longest wait the runtime allows.
              Effect.tapError((error) =>
                error.retryAfter
                  ? Effect.sleep(
                      Duration.min(
                        error.retryAfter,
                        policy.longestRateLimitWait,
                      ),
                    )
                  : Effect.void,
              ),
            )
          return attempt.pipe(
            Effect.tapError((error) =>
              isTransient(error)
                ? Effect.logDebug(`retrying: ${error.message}`)
                : Effect.void,
            ),
            Effect.retry({ schedule: policy.fly, while: isTransient }),
          )
        }

        const badShape = (path: string, error: ParseResult.ParseError) =>
          new FlyApiError({
            reason: "BadResponse",
            path,
            detail: ParseResult.TreeFormatter.formatErrorSync(error),
            ...orgOf,
          })

        const listApps = Effect.fn("FlyEvents.listApps")(function* () {
          const path = "/v1/apps"
          const body = yield* requestJson("GET", path, { org_slug: slug })
          const list = yield* Schema.decodeUnknown(ListAppsResponse)(body).pipe(
            Effect.mapError((error) =>
              badShape(`GET ${path}?org_slug=${slug}`, error),
            ),
          )
          const apps: Array<App> = []
          for (const raw of list.apps) {
            const app = decodeApp(raw)
            if (Either.isRight(app)) apps.push(app.right)
            else
              yield* Effect.logWarning(
                "skipping an app: unexpected payload",
              ).pipe(Effect.annotateLogs("error", app.left.message))
          }
          return apps
        })

        const listMachines = Effect.fn("FlyEvents.listMachines")(function* (
          app: string,
        ) {
          const path = `/v1/apps/${encodeURIComponent(app)}/machines`
          const body = yield* requestJson("GET", path, {
            include_deleted: "true",
          })
          const items = yield* Schema.decodeUnknown(
            Schema.Array(Schema.Unknown),
          )(body).pipe(
            Effect.mapError((error) => badShape(`GET ${path}`, error)),
          )
          const machines: Array<Machine> = []
          const skipped: Array<SkippedMachine> = []
          for (const raw of items) {
            const machine = decodeMachine(raw)
            if (Either.isRight(machine)) {
              machines.push(machine.right)
              continue
            }
            const error = ParseResult.TreeFormatter.formatErrorSync(
              machine.left,
            )
            skipped.push({ id: idOf(raw), error })
            yield* Effect.logWarning(
              "skipping a machine this pass: its payload did not decode",
            ).pipe(
              Effect.annotateLogs({
                app,
                machine: idOf(raw) ?? "unknown",
                error,
              }),
            )
          }
          return { machines, skipped } as const
        })

        const listEvents = Effect.fn("FlyEvents.listEvents")(function* (
          app: string,
          machineId: string,
          limit = 50,
        ) {
          const path = `/v1/apps/${encodeURIComponent(app)}/machines/${encodeURIComponent(machineId)}/events`
          const body = yield* requestJson("GET", path, {
            limit: String(limit),
          })
          const items = yield* Schema.decodeUnknown(
            Schema.Array(Schema.Unknown),
          )(body).pipe(
            Effect.mapError((error) => badShape(`GET ${path}`, error)),
          )
          const events: Array<MachineEvent> = []
          for (const raw of items) {
            const event = decodeEvent(raw)
            if (Either.isRight(event)) events.push(event.right)
            else
              yield* Effect.logWarning(
                "skipping an event: unexpected payload",
              ).pipe(
                Effect.annotateLogs({
                  app,
                  machine: machineId,
                  error: event.left.message,
                }),
              )
          }
          return events
        })

        const stopMachine = Effect.fn("FlyEvents.stopMachine")(function* (
          app: string,
          machineId: string,
        ) {
          yield* requestJson(
            "POST",
            `/v1/apps/${encodeURIComponent(app)}/machines/${encodeURIComponent(machineId)}/stop`,
          )
        })

        const org: FlyOrg = {
          slug,
          listApps,
          listMachines,
          listEvents,
          stopMachine,
        }
        return org
      }

      const orgs = settings.orgs.map((org) => makeOrg(org.slug, org.token))

      /**
       * The org a stored machine belongs to: by its slug, or the only one
       * when the record predates orgs. Fails when that org is not
       * configured (any more), or unknown while several are.
       */
      const forOrg = (
        slug: string | undefined,
      ): Effect.Effect<FlyOrg, FlyApiError> => {
        const found =
          slug === undefined
            ? orgs.length === 1
              ? orgs[0]
              : undefined
            : orgs.find((org) => org.slug === slug)
        return found === undefined
          ? Effect.fail(
              new FlyApiError({
                reason: "UnknownOrg",
                path: "",
                detail:
                  slug === undefined
                    ? "the machine's org is not known yet; it is recorded when the machine is next listed"
                    : `org ${slug} is no longer among the orgs watched`,
              }),
            )
          : Effect.succeed(found)
      }

      return {
        /** Every configured org, in the order given. */
        orgs,
        forOrg,
        /** HTTP requests sent to Fly so far by this service, all orgs. */
        requestsMade: Ref.get(requests),
      }
    }),
  },
) {}
