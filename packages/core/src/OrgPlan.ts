import { Effect } from "effect"
import { EventStore, type MachineRecord } from "./EventStore.ts"
import { META_BASELINE } from "./Guards.ts"

// How one pass spreads over several orgs: which orgs and apps it lists
// within a request budget, and under which meta keys each org keeps its
// progress (baseline, pending apps, cursor, greeting).

/**
 * The items to take this pass, in name order from `cursor` and wrapping
 * round, and the cursor for the next pass (undefined once all fit).
 */
export const selectApps = (
  names: ReadonlyArray<string>,
  cursor: string | undefined,
  count: number,
): {
  readonly apps: ReadonlyArray<string>
  readonly next: string | undefined
} => {
  const sorted = [...names].sort()
  if (count >= sorted.length) return { apps: sorted, next: undefined }
  const found =
    cursor === undefined ? 0 : sorted.findIndex((name) => name >= cursor)
  const start = found === -1 ? 0 : found
  const apps = Array.from(
    { length: count },
    (_, i) => sorted[(start + i) % sorted.length]!,
  )
  return { apps, next: sorted[(start + count) % sorted.length] }
}

/**
 * Splits `total` requests between orgs wanting `demands` each: equal
 * shares, what one org cannot use going to the others, and at least one
 * for every org with something to list, so each keeps moving.
 */
export const fairShares = (
  demands: ReadonlyArray<number>,
  total: number,
): ReadonlyArray<number> => {
  const shares = demands.map((demand) => Math.min(demand, 1))
  let left = total - shares.reduce((sum, share) => sum + share, 0)
  for (;;) {
    const hungry = demands.flatMap((demand, i) =>
      shares[i]! < demand ? [i] : [],
    )
    if (hungry.length === 0 || left <= 0) return shares
    const each = Math.floor(left / hungry.length)
    if (each === 0) {
      for (const i of hungry.slice(0, left)) shares[i]! += 1
      return shares
    }
    for (const i of hungry) {
      const give = Math.min(each, demands[i]! - shares[i]!)
      shares[i]! += give
      left -= give
    }
  }
}

/** Requests kept back from app listings for full event lists. */
export const BACKFILL_RESERVE = 5

/**
 * How many orgs one pass may list: each needs its app list and at least
 * one machine list. The others wait their turn.
 */
export const orgsPerPass = (budget: number): number =>
  Math.max(1, Math.floor((budget - BACKFILL_RESERVE) / 2))

/** Names the org whose progress lives under the unsuffixed meta keys. */
const META_UNSUFFIXED_ORG = "unsuffixed_keys_org"

/**
 * A store written before orgs keeps one org's progress under unsuffixed
 * keys (`baseline_at`, `app_cursor`, …). That org keeps them, so neither
 * an upgrade nor adding a second org later baselines or greets it again;
 * every other org has keys of its own (`app_cursor:acme`).
 *
 * The owner is recorded once: the only org, when there is one; with
 * several on a store from before orgs, the one that lists the apps of the
 * machines stored without an org; on a new store, none ("").
 */
export const unsuffixedOwner = (options: {
  readonly orgs: ReadonlyArray<string>
  /** The orgs listed this pass, with their app names. */
  readonly listed: ReadonlyArray<{
    readonly slug: string
    readonly apps: ReadonlyArray<string>
  }>
  readonly known: ReadonlyMap<string, MachineRecord>
  readonly now: number
}) =>
  Effect.gen(function* () {
    const store = yield* EventStore
    const stored = yield* store.getMeta(META_UNSUFFIXED_ORG)
    if (stored !== undefined) return stored === "" ? undefined : stored
    const claim = (slug: string) =>
      Effect.gen(function* () {
        if (yield* store.claimMeta(META_UNSUFFIXED_ORG, slug, options.now))
          return slug === "" ? undefined : slug
        // Another pass recorded it first.
        const winner = yield* store.getMeta(META_UNSUFFIXED_ORG)
        return winner === undefined || winner === "" ? undefined : winner
      })
    if (options.orgs.length === 1) return yield* claim(options.orgs[0]!)
    if ((yield* store.getMeta(META_BASELINE)) === undefined)
      return yield* claim("")
    const oldApps = new Set(
      [...options.known.values()]
        .filter((machine) => machine.org === undefined)
        .map((machine) => machine.app),
    )
    const owner = options.listed.find((org) =>
      org.apps.some((app) => oldApps.has(app)),
    )
    if (owner !== undefined) return yield* claim(owner.slug)
    // Undecided while an org that may own them was not listed.
    if (oldApps.size > 0 && options.listed.length < options.orgs.length)
      return undefined
    return yield* claim("")
  })

/** The meta key `name` of `org`, given the owner of the unsuffixed keys. */
export const orgKey =
  (org: string, owner: string | undefined) =>
  (name: string): string =>
    org === owner ? name : `${name}:${org}`
