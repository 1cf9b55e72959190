import { Duration, Schedule } from "effect"
import type { RetryPolicyShape } from "@flymon/core/RetryPolicy"

/**
 * The Bun runner lives for weeks, so it can afford patience: a Fly or
 * Discord hiccup is waited out inside the pass rather than reported.
 * About two minutes of retrying before a pass gives up on a request.
 */
export const patientRetry: RetryPolicyShape = {
  fly: Schedule.exponential("1 second", 2).pipe(
    Schedule.either(Schedule.spaced("30 seconds")),
    Schedule.jittered,
    Schedule.intersect(Schedule.recurs(6)),
  ),
  discord: Schedule.exponential("1 second", 2).pipe(
    Schedule.either(Schedule.spaced("30 seconds")),
    Schedule.jittered,
    Schedule.intersect(Schedule.recurs(6)),
  ),
  longestRateLimitWait: Duration.minutes(2),
  requestTimeout: Duration.seconds(30),
}
