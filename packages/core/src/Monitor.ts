import { Clock, Effect, Either } from "effect"
import { type DiscordPayload, watchingMessage } from "./DiscordMessage.ts"
import { EventStore, type StoreError } from "./EventStore.ts"
import type { App, Machine } from "./Domain.ts"
import {
  type FlyApiError,
  FlyEvents,
  type FlyOrg,
  type SkippedMachine,
} from "./FlyEvents.ts"
import { META_BASELINE, runGuards } from "./Guards.ts"
import { pollMachine, type PollContext } from "./MachinePoll.ts"
import {
  BACKFILL_RESERVE,
  fairShares,
  orgKey,
  orgsPerPass,
  selectApps,
  unsuffixedOwner,
} from "./OrgPlan.ts"
import { dailyCleanup, retentionCutoff } from "./Retention.ts"
import { deliverReport } from "./Delivery.ts"
import { type DiscordError, Notifier } from "./Notifier.ts"
import { routeFor } from "./Routes.ts"
import { DiscordSettings, MonitorSettings } from "./Settings.ts"
import { triageSilences } from "./Silences.ts"
import { triageStorms } from "./Storms.ts"
import { triageAppLimits } from "./Throttle.ts"

export { CLAIM_MS } from "./Delivery.ts"
export {
  EMBEDDED_TAIL,
  foldedStops,
  tailMayBeTruncated,
  toNewEvent,
} from "./MachinePoll.ts"

/** Machine lists fetched at once; Fly limits each app, not the org. */
export const APP_CONCURRENCY = 8

// Each org keeps these under its own key (see orgKey in OrgPlan.ts).
const META_WATCHING = "watching_sent_at"
const META_APP_CURSOR = "app_cursor"
const META_BASELINE_PENDING = "baseline_pending_apps"
/** The next org to list when they take turns. */
const META_ORG_CURSOR = "org_cursor"

export interface PassSummary {
  /** Orgs polled this pass, and those that could not be. */
  readonly orgs: number
  readonly failedOrgs: number
  readonly apps: number
  readonly appsPolled: number
  readonly machines: number
  readonly running: number
  /** Machines whose payload did not decode. */
  readonly skippedMachines: number
  /** Machines left for the next pass because the request budget ran out. */
  readonly deferredMachines: number
  readonly failedApps: number
  readonly newEvents: number
  readonly alertsSent: number
  readonly flyRequests: number
  readonly baseline: boolean
  readonly durationMs: number
}

export interface PassOptions {
  /**
   * The most Fly requests this pass may send (a Worker invocation pays for
   * every subrequest). Apps that do not fit wait for the next pass, taken
   * in turn from a cursor kept in the store. Unlimited when absent.
   */
  readonly flyRequestBudget?: number
}

export { BACKFILL_RESERVE, selectApps } from "./OrgPlan.ts"

const isRejected = (error: FlyApiError) =>
  error.reason === "Unauthorized" || error.reason === "Forbidden"

/** What the pass knows of one org before listing its machines. */
interface OrgPlan {
  readonly org: FlyOrg
  readonly apps: ReadonlyArray<App>
  /** The org's own name for a meta key. */
  readonly key: (name: string) => string
  /** Nothing of this org was recorded yet. */
  readonly baseline: boolean
  readonly pendingText: string | undefined
  readonly cursor: string | undefined
}

type Listing = Either.Either<
  {
    readonly org: string
    readonly app: string
    readonly machines: ReadonlyArray<Machine>
    readonly skipped: ReadonlyArray<SkippedMachine>
  },
  { readonly org: string; readonly app: string; readonly error: FlyApiError }
>

/** One org's part of a pass: the summary's counts, for one org. */
type OrgOutcome = Pick<
  PassSummary,
  | "apps"
  | "appsPolled"
  | "machines"
  | "running"
  | "skippedMachines"
  | "deferredMachines"
  | "failedApps"
  | "newEvents"
  | "baseline"
> & { readonly slug: string }

/** "Now watching org …", sent once per org. */
interface Greeting {
  readonly org: string
  readonly key: string
  readonly message: DiscordPayload
}

/**
 * Stores what one org's machine listings show, and where the org got to:
 * its baseline, the apps still to baseline, its cursor. Rejected when Fly
 * refused its token on any app: then its other apps wait for the next pass.
 */
const pollOrg = (options: {
  readonly plan: OrgPlan
  readonly selection: ReturnType<typeof selectApps>
  readonly listings: ReadonlyArray<Listing>
  readonly context: PollContext
  readonly monitoredEvents: ReadonlyArray<string>
  readonly several: boolean
}) =>
  Effect.gen(function* () {
    const store = yield* EventStore
    const { plan, selection, context } = options
    const { org, key } = plan
    const rejected = options.listings.find(
      (listing) => Either.isLeft(listing) && isRejected(listing.left.error),
    )
    if (rejected !== undefined && Either.isLeft(rejected))
      return { _tag: "Rejected", error: rejected.left.error } as const
    const unbaselined = new Set<string>(
      plan.baseline
        ? plan.apps.map((app) => app.name)
        : plan.pendingText === undefined
          ? []
          : (JSON.parse(plan.pendingText) as Array<string>),
    )
    let machines = 0
    let running = 0
    let skippedMachines = 0
    let deferredMachines = 0
    let failedApps = 0
    let newEvents = 0
    for (const listing of options.listings) {
      if (Either.isLeft(listing)) {
        failedApps++
        yield* Effect.logWarning(
          "skipping an app this pass: its machines could not be listed",
        ).pipe(
          Effect.annotateLogs({
            ...(options.several ? { org: org.slug } : {}),
            error: listing.left.error.message,
          }),
        )
        continue
      }
      const { app } = listing.right
      const recordOnly = unbaselined.delete(app)
      skippedMachines += listing.right.skipped.length
      for (const machine of listing.right.machines) {
        if (machine.state !== "destroyed") machines++
        if (machine.state === "started") running++
        const polled = yield* pollMachine(context, app, machine, recordOnly)
        if (polled.deferred) deferredMachines++
        newEvents += polled.newEvents
      }
    }

    const now = yield* Clock.currentTimeMillis
    if (plan.baseline)
      yield* store.setMeta(key(META_BASELINE), String(now), now)
    const stillPending = JSON.stringify([...unbaselined].sort())
    if (stillPending !== (plan.pendingText ?? "[]"))
      yield* store.setMeta(key(META_BASELINE_PENDING), stillPending, now)
    if ((selection.next ?? "") !== (plan.cursor ?? ""))
      yield* store.setMeta(key(META_APP_CURSOR), selection.next ?? "", now)
    const greeting: Greeting = {
      org: org.slug,
      key: key(META_WATCHING),
      message: watchingMessage({
        org: org.slug,
        apps: plan.apps.length,
        appsPolled: selection.apps.length - failedApps,
        machines,
        running,
        monitored: options.monitoredEvents,
      }),
    }
    const outcome: OrgOutcome = {
      slug: org.slug,
      apps: plan.apps.length,
      appsPolled: selection.apps.length,
      machines,
      running,
      skippedMachines,
      deferredMachines,
      failedApps,
      newEvents,
      baseline: plan.baseline,
    }
    return { _tag: "Polled", outcome, greeting } as const
  })

/**
 * One poll pass: list each org's machines, store billing-relevant events
 * not seen before, and deliver every alert not yet accepted by Discord.
 * An org that cannot be polled (token rejected, org unknown, Fly failing
 * for it) does not hold up the others; the pass then fails with its error
 * once the others' alerts are out. When no org could be polled, it fails
 * at once, as there is nothing new to deliver.
 */
export const runPassWith = (options: PassOptions) =>
  Effect.gen(function* () {
    const startedAt = yield* Clock.currentTimeMillis
    const { monitoredEvents } = yield* MonitorSettings
    const monitored = new Set(monitoredEvents)
    const fly = yield* FlyEvents
    const store = yield* EventStore
    const notifier = yield* Notifier
    const requestsBefore = yield* fly.requestsMade
    const budget = options.flyRequestBudget ?? Number.POSITIVE_INFINITY
    const flyRequests = Effect.map(fly.requestsMade, (n) => n - requestsBefore)
    const several = fly.orgs.length > 1

    const watchedBefore = (yield* store.getMeta(META_BASELINE)) !== undefined
    const cutoff = yield* retentionCutoff
    const known = yield* store.machines()
    const openRuns = new Map(
      (yield* store.openRuns()).map((run) => [run.machineId, run.startedAt]),
    )

    // More orgs than one budget can list take turns, like apps do.
    const orgCursor = several
      ? yield* store.getMeta(META_ORG_CURSOR)
      : undefined
    const orgTurn = selectApps(
      fly.orgs.map((org) => org.slug),
      orgCursor,
      orgsPerPass(budget),
    )
    const orgs = fly.orgs.filter((org) => orgTurn.apps.includes(org.slug))

    const failures: Array<{
      readonly org: string
      readonly error: FlyApiError
    }> = []
    const appLists = yield* Effect.forEach(
      orgs,
      (org) =>
        org.listApps().pipe(
          Effect.map((apps) => ({ org, apps })),
          Effect.either,
        ),
      { concurrency: APP_CONCURRENCY },
    )
    const listed = appLists.flatMap((result, i) => {
      if (Either.isRight(result)) return [result.right]
      failures.push({ org: orgs[i]!.slug, error: result.left })
      return []
    })

    const listedAt = yield* Clock.currentTimeMillis
    const owner = yield* unsuffixedOwner({
      orgs: fly.orgs.map((org) => org.slug),
      listed: listed.map(({ org, apps }) => ({
        slug: org.slug,
        apps: apps.map((app) => app.name),
      })),
      known,
      now: listedAt,
    })

    // Per org: its first listing is recorded, not announced, and so is the
    // first listing of each app it has not yet polled since it started
    // watching (with a request budget the first pass reaches only some
    // apps, and a failed listing reaches none).
    const plans = yield* Effect.forEach(listed, ({ org, apps }) =>
      Effect.gen(function* () {
        const key = orgKey(org.slug, owner)
        const baseline =
          (yield* store.getMeta(key(META_BASELINE))) === undefined
        const pendingText = yield* store.getMeta(key(META_BASELINE_PENDING))
        const cursor = yield* store.getMeta(key(META_APP_CURSOR))
        const plan: OrgPlan = { org, apps, key, baseline, pendingText, cursor }
        return plan
      }),
    )
    const shares = fairShares(
      plans.map((plan) => plan.apps.length),
      Math.max(1, Math.floor(budget - orgs.length - BACKFILL_RESERVE)),
    )
    const selections = plans.map((plan, i) =>
      selectApps(
        plan.apps.map((app) => app.name),
        plan.cursor,
        Math.max(1, shares[i]!),
      ),
    )
    const listings = yield* Effect.forEach(
      plans.flatMap((plan, i) =>
        selections[i]!.apps.map((app) => ({ org: plan.org, app })),
      ),
      ({ org, app }) =>
        org.listMachines(app).pipe(
          Effect.map((listing) => ({ org: org.slug, app, ...listing })),
          Effect.mapError((error) => ({ org: org.slug, app, error })),
          Effect.either,
        ),
      { concurrency: APP_CONCURRENCY },
    )

    const outcomes: Array<OrgOutcome> = []
    const greetings: Array<Greeting> = []
    for (const [i, plan] of plans.entries()) {
      const polled = yield* pollOrg({
        plan,
        selection: selections[i]!,
        listings: listings.filter((listing) =>
          Either.isRight(listing)
            ? listing.right.org === plan.org.slug
            : listing.left.org === plan.org.slug,
        ),
        context: {
          org: plan.org,
          monitored,
          known,
          openRuns,
          cutoff,
          mayBackfill: Effect.map(flyRequests, (n) => n < budget),
        },
        monitoredEvents,
        several,
      })
      if (polled._tag === "Rejected")
        failures.push({ org: plan.org.slug, error: polled.error })
      else {
        outcomes.push(polled.outcome)
        greetings.push(polled.greeting)
      }
    }

    // In the order the orgs are configured, so the pass fails the same
    // way every time.
    const order = fly.orgs.map((org) => org.slug)
    failures.sort((a, b) => order.indexOf(a.org) - order.indexOf(b.org))
    if (several)
      for (const failure of failures)
        yield* Effect.logWarning(
          "could not poll an org this pass; the other orgs go on",
        ).pipe(
          Effect.annotateLogs({
            org: failure.org,
            error: failure.error.message,
          }),
        )
    if (outcomes.length === 0 && failures.length > 0)
      return yield* Effect.fail(failures[0]!.error)

    const now = yield* Clock.currentTimeMillis
    // When the monitor started watching, whatever the org: the digest
    // covers only days from then on.
    if (!watchedBefore && outcomes.length > 0)
      yield* store.claimMeta(META_BASELINE, String(now), now)
    if ((orgTurn.next ?? "") !== (orgCursor ?? "") && several)
      yield* store.setMeta(META_ORG_CURSOR, orgTurn.next ?? "", now)
    // Claimed before sending, so two first passes at once send it once; a
    // failed send gives the claim back for the next pass. Each goes where
    // that org's alerts go.
    // A greeting Discord refused does not stop the pass: the cost guards
    // and the triage still run, and the alerts wait in the store.
    const { routes } = yield* DiscordSettings
    let greetingFailure: DiscordError | StoreError | undefined
    for (const greeting of greetings)
      if (yield* store.claimMeta(greeting.key, String(now), now)) {
        const route = routeFor(routes, { org: greeting.org })
        const sent = yield* notifier
          .send(greeting.message, {
            webhookUrl: route.webhook,
            route: route.name,
          })
          .pipe(
            Effect.tapError(() => store.deleteMeta(greeting.key)),
            Effect.either,
          )
        if (Either.isLeft(sent)) greetingFailure ??= sent.left
      }

    yield* dailyCleanup
    yield* runGuards
    yield* triageSilences
    yield* triageStorms
    yield* triageAppLimits
    // Again: storm and limit notices queued just now may be about an app
    // under a silence.
    yield* triageSilences
    const report = yield* Effect.either(deliverReport)
    const delivered = Either.flatMap(report, ({ sent, failure }) =>
      failure === undefined ? Either.right(sent) : Either.left(failure),
    )
    const total = (field: keyof Omit<OrgOutcome, "slug" | "baseline">) =>
      outcomes.reduce((sum, outcome) => sum + outcome[field], 0)
    const summary: PassSummary = {
      orgs: outcomes.length,
      failedOrgs: failures.length,
      apps: total("apps"),
      appsPolled: total("appsPolled"),
      machines: total("machines"),
      running: total("running"),
      skippedMachines: total("skippedMachines"),
      deferredMachines: total("deferredMachines"),
      failedApps: total("failedApps"),
      newEvents: total("newEvents"),
      // Alerts that went out count even when a route failed.
      alertsSent: Either.isRight(report) ? report.right.sent : 0,
      flyRequests: yield* flyRequests,
      baseline: outcomes.some((outcome) => outcome.baseline),
      durationMs: (yield* Clock.currentTimeMillis) - startedAt,
    }
    yield* Effect.log(
      Either.isLeft(delivered) || greetingFailure !== undefined
        ? "pass done, delivery failed"
        : failures.length > 0
          ? "pass done, an org could not be polled"
          : "pass done",
    ).pipe(
      Effect.annotateLogs({
        ...(several
          ? { orgs: summary.orgs, failed_orgs: summary.failedOrgs }
          : {}),
        apps: summary.apps,
        apps_polled: summary.appsPolled,
        machines: summary.machines,
        running: summary.running,
        new_events: summary.newEvents,
        alerts_sent: summary.alertsSent,
        skipped_machines: summary.skippedMachines,
        deferred_machines: summary.deferredMachines,
        failed_apps: summary.failedApps,
        fly_requests: summary.flyRequests,
        baseline: summary.baseline,
        duration_ms: summary.durationMs,
      }),
    )
    // An org's failure first: it is what stopped alerts from being seen.
    if (failures.length > 0) return yield* Effect.fail(failures[0]!.error)
    if (Either.isLeft(delivered)) return yield* Effect.fail(delivered.left)
    if (greetingFailure !== undefined)
      return yield* Effect.fail(greetingFailure)
    return summary
  }).pipe(Effect.withSpan("Monitor.runPass"))

export const runPass = runPassWith({})
