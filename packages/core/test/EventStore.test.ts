import { Layer } from "effect"
import { EventStore } from "../src/EventStore.ts"
import { eventStoreSuite } from "./EventStoreSuite.ts"
import { layerSqlite } from "./support.ts"

eventStoreSuite(
  "bun:sqlite",
  EventStore.Default.pipe(Layer.provideMerge(layerSqlite)),
)
