import { footerKeys } from "@flymon/core/DiscordMessage"
import {
  createExecutionContext,
  createScheduledController,
  env,
  waitOnExecutionContext,
} from "cloudflare:test"
import worker, { type Env } from "../src/index.ts"
import { control, type DiscordMessage, type FakeUrls } from "./control.ts"
import { CRON, FLY_TOKEN, ORG } from "./fixtures.ts"

// The core's daily digest goes out at a time of day; off, so no test
// depends on when it runs.
const DETERMINISTIC = { DIGEST_HOUR: "off" }

/** The Worker's variables pointed at fresh fakes. */
export const freshFakes = async (): Promise<{
  readonly urls: FakeUrls
  readonly vars: Env
}> => {
  const urls = await control.reset()
  return {
    urls,
    vars: {
      ...env,
      ...DETERMINISTIC,
      FLY_API_TOKEN: FLY_TOKEN,
      FLY_ORG_SLUG: ORG,
      FLY_API_BASE_URL: urls.flyUrl,
      DISCORD_WEBHOOK_URL: urls.webhookUrl,
    },
  }
}

/** One cron event, awaited to the end of its `waitUntil` work. */
export const tick = async (vars: Env): Promise<void> => {
  const ctx = createExecutionContext()
  await worker.scheduled(
    createScheduledController({ cron: CRON, scheduledTime: Date.now() }),
    vars,
    ctx,
  )
  await waitOnExecutionContext(ctx)
}

export const rows = async <A = Record<string, unknown>>(
  query: string,
): Promise<Array<A>> => (await env.DB.prepare(query).all<A>()).results

export const EVENT_ROWS = `SELECT key, machine_id, app, type, status, source,
  timestamp, exit_code, oom_killed, requested_stop, restart_count, baseline,
  notified_at IS NOT NULL AS notified, claimed_until
  FROM events ORDER BY timestamp, key`

export const MACHINE_ROWS = `SELECT id, app, name, region, size, state,
  last_event_key, last_event_at FROM machines ORDER BY id`

/**
 * `event <key>` per event announced (several events of one machine share an
 * embed), and a notice's footer as it is.
 */
export const footers = (messages: ReadonlyArray<DiscordMessage>) =>
  messages.flatMap((m) =>
    (m.embeds ?? []).flatMap((e) => {
      const keys = footerKeys(e.footer.text)
      return keys.length === 0
        ? [e.footer.text]
        : keys.map((key) => `event ${key}`)
    }),
  )

export const lastPass = async () => {
  const [row] = await rows<{ value: string }>(
    "SELECT value FROM meta WHERE key = 'last_pass'",
  )
  return row === undefined ? undefined : JSON.parse(row.value)
}
