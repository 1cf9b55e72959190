import { Either, Redacted } from "effect"
import { globToRegExp } from "./Glob.ts"

/**
 * Where alerts about some apps go. A route with neither `apps` nor `orgs`
 * matches everything: the default route, always the last one.
 */
export interface DiscordRoute {
  /** How logs and errors name the route: never its URL, a credential. */
  readonly name: string
  /** App name globs (`web-*`); any app when absent. */
  readonly apps: ReadonlyArray<string> | undefined
  /** Fly org slugs; any org when absent. */
  readonly orgs: ReadonlyArray<string> | undefined
  readonly webhook: Redacted.Redacted<string>
}

/** What an alert is about, as far as routing cares. */
export interface RouteTarget {
  readonly app?: string | undefined
  readonly org?: string | undefined
}

export const DEFAULT_ROUTE = "default"

export const isHttpUrl = (text: string): boolean => {
  try {
    const url = new URL(text)
    return url.protocol === "http:" || url.protocol === "https:"
  } catch {
    return false
  }
}

export const matchesEverything = (route: DiscordRoute): boolean =>
  route.apps === undefined && route.orgs === undefined

const KEYS = ["name", "apps", "orgs", "webhook"]

const EXAMPLE =
  '[{"apps": ["web-*"], "webhook": "https://discord.com/api/webhooks/…"}, ' +
  '{"webhook": "https://discord.com/api/webhooks/…"}]'

/** A string or a non-empty list of non-empty strings. */
const names = (value: unknown): ReadonlyArray<string> | undefined => {
  const list = typeof value === "string" ? [value] : value
  return Array.isArray(list) &&
    list.length > 0 &&
    list.every((item) => typeof item === "string" && item.trim().length > 0)
    ? list.map((item: string) => item.trim())
    : undefined
}

/**
 * Reads `DISCORD_ROUTES`: a JSON array of `{name?, apps?, orgs?, webhook}`,
 * first match wins. Errors name the route by position and never quote the
 * value: it holds webhook URLs.
 */
export const parseRoutes = (
  text: string,
): Either.Either<ReadonlyArray<DiscordRoute>, string> => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    return Either.left(
      `not valid JSON (value not shown: it holds webhook URLs); expected ${EXAMPLE}`,
    )
  }
  if (!Array.isArray(json))
    return Either.left(`expected a JSON array of routes such as ${EXAMPLE}`)
  const routes: Array<DiscordRoute> = []
  for (const [index, entry] of json.entries()) {
    const at = `route ${index + 1}`
    if (typeof entry !== "object" || entry === null || Array.isArray(entry))
      return Either.left(`${at}: expected an object with a "webhook"`)
    const unknown = Object.keys(entry).filter((key) => !KEYS.includes(key))
    if (unknown.length > 0)
      return Either.left(
        `${at}: unknown key ${unknown.map((key) => `"${key}"`).join(", ")}; ` +
          `known: ${KEYS.join(", ")}`,
      )
    const { name, apps, orgs, webhook } = entry as Record<string, unknown>
    if (webhook === undefined) return Either.left(`${at}: "webhook" is missing`)
    if (typeof webhook !== "string" || !isHttpUrl(webhook.trim()))
      return Either.left(
        `${at}: "webhook" must be an http(s) URL (value not shown: it is a secret)`,
      )
    if (name !== undefined && (typeof name !== "string" || name.trim() === ""))
      return Either.left(`${at}: "name" must be a non-empty string`)
    const appGlobs = apps === undefined ? undefined : names(apps)
    const orgSlugs = orgs === undefined ? undefined : names(orgs)
    if (apps !== undefined && appGlobs === undefined)
      return Either.left(
        `${at}: "apps" must be an app name glob or a list of them`,
      )
    if (orgs !== undefined && orgSlugs === undefined)
      return Either.left(`${at}: "orgs" must be an org slug or a list of them`)
    routes.push({
      name: typeof name === "string" ? name.trim() : at,
      apps: appGlobs,
      orgs: orgSlugs,
      webhook: Redacted.make(webhook.trim().replace(/\/+$/, "")),
    })
  }
  const catchAll = routes.findIndex(matchesEverything)
  if (catchAll !== -1 && catchAll < routes.length - 1)
    return Either.left(
      `route ${catchAll + 1} matches every app, so the routes after it ` +
        'would never be used: give it "apps" or "orgs", or move it last',
    )
  // `"apps": "*"` in every org takes every alert about an app first.
  const everyApp = routes.findIndex(
    (route) => route.orgs === undefined && route.apps?.includes("*") === true,
  )
  const shadowed = routes.findIndex(
    (route, index) => index > everyApp && route.apps !== undefined,
  )
  if (everyApp !== -1 && shadowed !== -1)
    return Either.left(
      `route ${shadowed + 1} can never match: route ${everyApp + 1} takes ` +
        "every app first",
    )
  return Either.right(routes)
}

/**
 * Completes the routes with DISCORD_WEBHOOK_URL as the default route.
 * Exactly one of the two must catch what no other route matches.
 */
export const withDefaultRoute = (
  routes: ReadonlyArray<DiscordRoute>,
  webhookUrl: Redacted.Redacted<string> | undefined,
): Either.Either<ReadonlyArray<DiscordRoute>, "missing" | "both"> => {
  const last = routes.at(-1)
  const hasCatchAll = last !== undefined && matchesEverything(last)
  if (hasCatchAll && webhookUrl !== undefined) return Either.left("both")
  if (hasCatchAll) return Either.right(routes)
  if (webhookUrl === undefined) return Either.left("missing")
  return Either.right([
    ...routes,
    {
      name: DEFAULT_ROUTE,
      apps: undefined,
      orgs: undefined,
      webhook: webhookUrl,
    },
  ])
}

/** Routes naming an org that is not watched: they could never match. */
export const unwatchedOrgs = (
  routes: ReadonlyArray<DiscordRoute>,
  watched: ReadonlyArray<string>,
): ReadonlyArray<string> =>
  routes.flatMap((route, index) =>
    (route.orgs ?? [])
      .filter((org) => !watched.includes(org))
      .map((org) => `route ${index + 1} names org "${org}"`),
  )

// Every alert is routed: each glob is compiled once, not per alert.
const patterns = new Map<string, RegExp>()
const patternOf = (glob: string): RegExp => {
  let pattern = patterns.get(glob)
  if (pattern === undefined) {
    pattern = globToRegExp(glob)
    patterns.set(glob, pattern)
  }
  return pattern
}

/**
 * The route of an alert: the first whose apps and orgs both match. An
 * alert about no app in particular (a digest, a budget) skips routes that
 * name apps; one without an org skips routes that name orgs.
 */
export const routeFor = (
  routes: ReadonlyArray<DiscordRoute>,
  target: RouteTarget,
): DiscordRoute => {
  const found = routes.find(
    (route) =>
      (route.apps === undefined ||
        (target.app !== undefined &&
          route.apps.some((glob) => patternOf(glob).test(target.app!)))) &&
      (route.orgs === undefined ||
        (target.org !== undefined && route.orgs.includes(target.org))),
  )
  // The last route matches everything (see withDefaultRoute).
  return found ?? routes.at(-1)!
}
