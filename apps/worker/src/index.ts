import * as D1Client from "@effect/sql-d1/D1Client"
import type * as SqlClient from "@effect/sql/SqlClient"
import { EventStore } from "@flymon/core/EventStore"
import { Cause, Effect, Layer, Logger } from "effect"
import { layerConfig, type Env } from "./Env.ts"
import { healthz } from "./Health.ts"
import { scheduledPass } from "./Scheduled.ts"
import { metricsResponse } from "./Metrics.ts"
import { statusResponse } from "./Status.ts"

export type { Env } from "./Env.ts"

// Merged: silences and storms query D1 beside EventStore.
const layerStore = (env: Env) =>
  EventStore.Default.pipe(Layer.provideMerge(D1Client.layer({ db: env.DB })))

/** Runs `effect` with D1, JSON logs and `env` as config; never rejects. */
const run = <A>(
  env: Env,
  effect: Effect.Effect<A, never, EventStore | SqlClient.SqlClient>,
  orElse: () => A,
): Promise<A> =>
  effect.pipe(
    Effect.provide(layerStore(env)),
    Effect.catchAllCause((cause) =>
      Effect.logError("invocation failed").pipe(
        Effect.annotateLogs("error", Cause.pretty(cause)),
        Effect.zipRight(Effect.sync(orElse)),
      ),
    ),
    Effect.provide(Layer.mergeAll(Logger.json, layerConfig(env))),
    Effect.runPromise,
  )

export default {
  async fetch(request, env) {
    const { pathname } = new URL(request.url)
    if (request.method === "GET" && pathname === "/healthz")
      return run(env, healthz, () =>
        Response.json({ error: "failed" }, { status: 500 }),
      )
    if (request.method === "GET" && pathname === "/metrics")
      return run(env, metricsResponse(request, env.STATUS_TOKEN), () =>
        Response.json({ error: "failed" }, { status: 500 }),
      )
    if (request.method === "GET" && pathname === "/status")
      return run(env, statusResponse(request, env.STATUS_TOKEN), () =>
        Response.json({ error: "failed" }, { status: 500 }),
      )
    return new Response("not found", { status: 404 })
  },
  async scheduled(controller, env, ctx) {
    ctx.waitUntil(
      run(
        env,
        scheduledPass({
          cron: controller.cron,
          scheduledTime: controller.scheduledTime,
        }),
        () => undefined,
      ),
    )
  },
} satisfies ExportedHandler<Env>
