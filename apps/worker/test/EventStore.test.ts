import * as D1Client from "@effect/sql-d1/D1Client"
import { EventStore } from "@flymon/core/EventStore"
import { env } from "cloudflare:test"
import { Layer } from "effect"
import { eventStoreSuite } from "../../../packages/core/test/EventStoreSuite.ts"

// The suite bun:sqlite passes in packages/core, here on D1 in workerd.
eventStoreSuite(
  "D1",
  EventStore.Default.pipe(Layer.provideMerge(D1Client.layer({ db: env.DB }))),
)
