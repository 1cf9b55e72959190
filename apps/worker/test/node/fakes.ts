import { Control } from "@flymon/testkit/Control"
import type { TestProject } from "vitest/node"
import { FLY_TOKEN, ORG } from "../fixtures.ts"

declare module "vitest" {
  interface ProvidedContext {
    controlUrl: string
  }
}

// Runs in Node: tests inside workerd reach the fakes through Control.
export default async function setup(project: TestProject) {
  const control = await Control.start({ token: FLY_TOKEN, org: ORG })
  project.provide("controlUrl", control.url)
  return () => control.stop()
}
