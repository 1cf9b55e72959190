import { status } from "@flymon/core/Status"
import { Effect } from "effect"

const json = (code: number, body: unknown) =>
  Response.json(body, {
    status: code,
    headers: { "cache-control": "no-store" },
  })

const digest = (text: string) =>
  crypto.subtle.digest("SHA-256", new TextEncoder().encode(text))

/**
 * True when the request carries `Authorization: Bearer <token>`. Both sides
 * are hashed first so the comparison takes the same time whatever the
 * length or content of a wrong guess.
 */
export const authorized = (request: Request, token: string) =>
  Effect.promise(async () => {
    const header = request.headers.get("authorization") ?? ""
    const [given, expected] = await Promise.all([
      digest(header),
      digest(`Bearer ${token}`),
    ])
    return crypto.subtle.timingSafeEqual(given, expected)
  })

/**
 * `GET /status`: running machines, their rate and the month's cost, for
 * holders of STATUS_TOKEN only. Without a configured token the endpoint
 * does not exist.
 */
export const statusResponse = (request: Request, token: string | undefined) =>
  Effect.gen(function* () {
    if (token === undefined || token === "")
      return new Response("not found", { status: 404 })
    if (!(yield* authorized(request, token)))
      return json(401, { error: "send Authorization: Bearer <STATUS_TOKEN>" })
    return json(200, yield* status)
  }).pipe(
    Effect.catchAll((error) =>
      Effect.logError("/status could not be computed").pipe(
        Effect.annotateLogs("error", error.message),
        Effect.as(json(500, { error: "could not compute the status" })),
      ),
    ),
  )
