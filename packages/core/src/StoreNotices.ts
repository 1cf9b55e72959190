import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Schema } from "effect"
import { decodeRows, storeFailure, updateInChunks } from "./StoreSql.ts"

/** An alert that is not one Fly event: a runaway machine, a budget, … */
export interface Notice {
  readonly key: string
  readonly kind: string
  readonly createdAt: number
  readonly silent: boolean
  readonly embed: unknown
  /** The app (and org) it is about: it takes that app's Discord route. */
  readonly app?: string | undefined
  readonly org?: string | undefined
}

const NoticeRow = Schema.Struct({
  key: Schema.String,
  kind: Schema.String,
  created_at: Schema.Number,
  silent: Schema.Number,
  embed: Schema.String,
  app: Schema.NullOr(Schema.String),
  org: Schema.NullOr(Schema.String),
})

/** The store's statements about notices, over the runtime's SqlClient. */
export const noticeStatements = (sql: SqlClient.SqlClient) => {
  /** Queues a notice once per key; true when it was new. */
  const addNotice = Effect.fn("EventStore.addNotice")(function* (
    notice: Notice,
  ) {
    const rows = yield* sql`INSERT INTO notices ${sql.insert({
      key: notice.key,
      kind: notice.kind,
      created_at: notice.createdAt,
      silent: notice.silent ? 1 : 0,
      embed: JSON.stringify(notice.embed),
      app: notice.app ?? null,
      org: notice.org ?? null,
    })} ON CONFLICT (key) DO NOTHING RETURNING key`.pipe(
      Effect.mapError(storeFailure("add notice")),
    )
    return rows.length > 0
  })

  const claimNoticeRows = (
    operation: string,
    options: {
      readonly now: number
      readonly claimMs: number
      readonly limit: number
      readonly olderThan?: number
    },
  ) =>
    Effect.gen(function* () {
      const stale =
        options.olderThan === undefined
          ? sql.literal("")
          : sql`AND created_at < ${options.olderThan}`
      const rows = yield* sql`UPDATE notices
        SET claimed_until = ${options.now + options.claimMs}
        WHERE key IN (
          SELECT key FROM notices
          WHERE notified_at IS NULL ${stale}
            AND (claimed_until IS NULL OR claimed_until < ${options.now})
          ORDER BY created_at, key
          LIMIT ${options.limit})
        RETURNING key, kind, created_at, silent, embed, app, org`.pipe(
        Effect.mapError(storeFailure(operation)),
        Effect.flatMap(decodeRows(NoticeRow, operation)),
      )
      return rows
        .map((row): Notice => ({
          key: row.key,
          kind: row.kind,
          createdAt: row.created_at,
          silent: row.silent === 1,
          embed: JSON.parse(row.embed),
          ...(row.app === null ? {} : { app: row.app }),
          ...(row.org === null ? {} : { org: row.org }),
        }))
        .sort((a, b) =>
          a.createdAt === b.createdAt
            ? a.key.localeCompare(b.key)
            : a.createdAt - b.createdAt,
        )
    })

  const claimNotices = Effect.fn("EventStore.claimNotices")(
    function* (options: {
      readonly now: number
      readonly claimMs: number
      readonly limit: number
    }) {
      return yield* claimNoticeRows("claim notices", options)
    },
  )

  const markNoticesNotified = Effect.fn("EventStore.markNoticesNotified")(
    function* (keys: ReadonlyArray<string>, now: number) {
      yield* updateInChunks(
        "mark notices delivered",
        keys,
        (chunk) => sql`UPDATE notices
          SET notified_at = ${now}, claimed_until = NULL
          WHERE key IN ${sql.in(chunk)}`,
      )
    },
  )

  const releaseNotices = Effect.fn("EventStore.releaseNotices")(function* (
    keys: ReadonlyArray<string>,
  ) {
    yield* updateInChunks(
      "release notices",
      keys,
      (chunk) => sql`UPDATE notices SET claimed_until = NULL
        WHERE key IN ${sql.in(chunk)} AND notified_at IS NULL`,
    )
  })

  /** Claims undelivered notices created before `olderThan`, oldest first. */
  const claimStaleNotices = Effect.fn("EventStore.claimStaleNotices")(
    function* (options: {
      readonly now: number
      readonly claimMs: number
      readonly olderThan: number
      readonly limit: number
    }) {
      return yield* claimNoticeRows("claim stale notices", options)
    },
  )

  /** Settles notices without their own message, as `giveUp` does. */
  const giveUpNotices = Effect.fn("EventStore.giveUpNotices")(function* (
    keys: ReadonlyArray<string>,
    why: string,
    now: number,
  ) {
    yield* updateInChunks(
      "settle undeliverable notices",
      keys,
      (chunk) => sql`UPDATE notices
        SET notified_at = ${now}, claimed_until = NULL,
          delivery_error = ${why}
        WHERE key IN ${sql.in(chunk)} AND notified_at IS NULL`,
    )
  })

  return {
    addNotice,
    claimNotices,
    markNoticesNotified,
    releaseNotices,
    claimStaleNotices,
    giveUpNotices,
  } as const
}
