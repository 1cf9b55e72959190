import type { RetryPolicyShape } from "@flymon/core/RetryPolicy"
import { Duration, Schedule } from "effect"

/**
 * One cron invocation has one cron period to finish, and every retry is a
 * subrequest paid from the same small budget. So the Worker retries twice,
 * quickly, and leaves anything longer to the next invocation, where the
 * Bun runner's patient policy waits minutes inside one pass.
 *
 * Worst case, Fly hanging: ceil(34 apps / 8 at once) × 3 attempts × 8 s,
 * about two minutes, well inside the 5-minute cron period.
 */
export const workerRetry: RetryPolicyShape = {
  fly: Schedule.exponential("200 millis", 2).pipe(
    Schedule.intersect(Schedule.recurs(2)),
  ),
  discord: Schedule.exponential("200 millis", 2).pipe(
    Schedule.intersect(Schedule.recurs(2)),
  ),
  longestRateLimitWait: Duration.seconds(5),
  requestTimeout: Duration.seconds(8),
}

/** Outbound fetches one invocation may make on the Workers Free plan. */
export const FREE_PLAN_SUBREQUESTS = 50

/**
 * Kept back for Discord: the one-time greeting, alert and notice messages
 * (up to 10 embeds each), each send with its retries.
 */
export const DISCORD_RESERVE = 10

/**
 * What one pass may spend on Fly: the app list, machine lists, event lists
 * and any auto-stop requests of the core's cost guards.
 */
export const FLY_REQUEST_BUDGET = FREE_PLAN_SUBREQUESTS - DISCORD_RESERVE
