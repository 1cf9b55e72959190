import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"

const mainPath = fileURLToPath(new URL("../src/main.ts", import.meta.url))

export interface CliResult {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/**
 * Runs the real Bun entry point with exactly `env` (plus PATH), as a user
 * would, and collects what it prints.
 */
export const runCli = (
  args: ReadonlyArray<string>,
  env: Record<string, string>,
  options: { readonly cwd: string },
): Promise<CliResult> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["run", mainPath, ...args], {
      cwd: options.cwd,
      env: { PATH: process.env.PATH ?? "", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk) => (stdout += chunk))
    child.stderr.on("data", (chunk) => (stderr += chunk))
    child.on("error", reject)
    child.on("close", (code) => resolve({ code, stdout, stderr }))
  })
