import { prometheusText } from "@flymon/core/Prometheus"
import { Duration, Effect, Ref } from "effect"

/** What /healthz knows: the last pass that worked and the last that did not. */
export interface PassHealth {
  readonly lastSuccessAt: number | null
  readonly lastFailure: {
    readonly at: number
    readonly reason: string
    readonly message: string
  } | null
}

export const initialHealth: PassHealth = {
  lastSuccessAt: null,
  lastFailure: null,
}

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), {
    status,
    headers: {
      "content-type": "application/json",
      "cache-control": "no-store",
    },
  })

/**
 * `/healthz`: 200 while the last successful pass is younger than three poll
 * intervals, else 503. The body says what failed last, Discord included.
 */
export const healthResponse = (
  health: PassHealth,
  now: number,
  interval: Duration.Duration,
) => {
  const limit = 3 * Duration.toMillis(interval)
  const healthy =
    health.lastSuccessAt !== null && now - health.lastSuccessAt < limit
  return json(healthy ? 200 : 503, {
    ok: healthy,
    lastSuccessAt:
      health.lastSuccessAt === null
        ? null
        : new Date(health.lastSuccessAt).toISOString(),
    lastFailure:
      health.lastFailure === null
        ? null
        : {
            at: new Date(health.lastFailure.at).toISOString(),
            reason: health.lastFailure.reason,
            message: health.lastFailure.message,
            discordFailing:
              health.lastFailure.reason.startsWith("DiscordError"),
          },
  })
}

/**
 * Serves /metrics (Prometheus text) and /healthz on `host:port` for as long
 * as the surrounding scope lives.
 */
export const serveMetrics = (options: {
  readonly host: string
  readonly port: number
  readonly interval: Duration.Duration
  readonly health: Ref.Ref<PassHealth>
}) =>
  Effect.acquireRelease(
    Effect.try({
      catch: (cause) =>
        new Error(
          `cannot serve metrics on METRICS_HOST=${options.host} ` +
            `METRICS_PORT=${options.port}: ${String((cause as Error).message ?? cause)}`,
        ),
      try: () =>
        Bun.serve({
          hostname: options.host,
          port: options.port,
          fetch: async (request) => {
            const { pathname } = new URL(request.url)
            if (request.method !== "GET")
              return new Response("method not allowed", { status: 405 })
            if (pathname === "/metrics")
              return new Response(await Effect.runPromise(prometheusText), {
                headers: {
                  "content-type": "text/plain; version=0.0.4; charset=utf-8",
                },
              })
            if (pathname === "/healthz")
              return healthResponse(
                Effect.runSync(Ref.get(options.health)),
                Date.now(),
                options.interval,
              )
            return new Response("not found", { status: 404 })
          },
        }),
    }),
    (server) => Effect.sync(() => server.stop(true)),
  ).pipe(
    Effect.tap((server) =>
      Effect.log(
        `metrics at http://${options.host}:${server.port}/metrics, health at /healthz`,
      ),
    ),
  )
