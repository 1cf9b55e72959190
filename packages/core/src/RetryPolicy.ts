import { Context, Duration, Layer, type Schedule } from "effect"

/**
 * How hard a runtime tries before giving up on one request. Each runtime
 * names its own: a long-lived process can wait out an outage, a Worker
 * invocation has seconds to spend.
 */
export interface RetryPolicyShape {
  /** Retries of Fly 429, 5xx, timeouts and network errors. */
  readonly fly: Schedule.Schedule<unknown, unknown>
  /** Retries of Discord 429, 5xx, timeouts and network errors. */
  readonly discord: Schedule.Schedule<unknown, unknown>
  /** A Discord 429 asking to wait longer than this ends the send for now. */
  readonly longestRateLimitWait: Duration.Duration
  /** Time allowed for one HTTP request. */
  readonly requestTimeout: Duration.Duration
}

export class RetryPolicy extends Context.Tag("@flymon/RetryPolicy")<
  RetryPolicy,
  RetryPolicyShape
>() {
  static readonly layer = (policy: RetryPolicyShape) =>
    Layer.succeed(RetryPolicy, policy)
}

export const rateLimitWait = (
  policy: RetryPolicyShape,
  wait: Duration.Duration,
): boolean => Duration.lessThanOrEqualTo(wait, policy.longestRateLimitWait)
