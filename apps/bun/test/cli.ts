import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"

const mainPath = fileURLToPath(new URL("../src/main.ts", import.meta.url))

export interface CliResult {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

/**
 * Starts the real Bun entry point with exactly `env` (plus PATH), as a user
 * would, collecting what it prints.
 */
export const startCli = (
  args: ReadonlyArray<string>,
  env: Record<string, string>,
  options: { readonly cwd: string },
) => {
  const child = spawn(process.execPath, ["run", mainPath, ...args], {
    cwd: options.cwd,
    // logfmt unless a test asks otherwise: tests read the log lines.
    env: { PATH: process.env.PATH ?? "", LOG_FORMAT: "logfmt", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  })
  let stdout = ""
  let stderr = ""
  child.stdout.on("data", (chunk) => (stdout += chunk))
  child.stderr.on("data", (chunk) => (stderr += chunk))
  const done = new Promise<CliResult>((resolve, reject) => {
    child.on("error", reject)
    child.on("close", (code, signal) =>
      resolve({ code, signal, stdout, stderr }),
    )
  })
  return { child, done, output: () => stdout + stderr }
}

export const runCli = (
  args: ReadonlyArray<string>,
  env: Record<string, string>,
  options: { readonly cwd: string },
): Promise<CliResult> => startCli(args, env, options).done
