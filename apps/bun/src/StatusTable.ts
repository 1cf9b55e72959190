import { humanDuration, usd } from "@flymon/core/Pricing"
import type { Status } from "@flymon/core/Status"

// Fly strings go to a terminal: control characters could move the cursor
// or recolour the screen, so they are dropped.
const printable = (text: string) =>
  text.replace(/[\u0000-\u001f\u007f-\u009f]/g, "")

const table = (rows: ReadonlyArray<ReadonlyArray<string>>) => {
  const widths = rows[0]!.map((_, column) =>
    Math.max(...rows.map((row) => row[column]!.length)),
  )
  return rows
    .map((row) =>
      row
        .map((cell, column) => cell.padEnd(widths[column]!))
        .join("  ")
        .trimEnd(),
    )
    .join("\n")
}

/** The `status` command's output: running machines and the month so far. */
export const renderStatus = (status: Status): string => {
  const header = `Fly machines running at ${status.at.slice(0, 16).replace("T", " ")} UTC`
  const body =
    status.running.length === 0
      ? "No machine is running."
      : table([
          [
            "APP",
            "MACHINE",
            "ID",
            "REGION",
            "SIZE",
            "RUNNING",
            "RATE",
            "MONTH",
          ],
          ...status.running.map((m) => [
            printable(m.app),
            printable(m.name),
            printable(m.machineId),
            printable(m.region),
            printable(m.size),
            humanDuration(m.runningHours * 3_600_000),
            `${usd(m.hourlyUsd)}/h`,
            usd(m.monthToDateUsd),
          ]),
        ])
  const budget =
    status.budgetUsd === null ? "" : ` · budget ${usd(status.budgetUsd)}`
  const estimated = status.running.some((m) => m.estimated)
    ? "\nRates are estimates from Fly's list prices; some regions or sizes are priced at baseline."
    : ""
  return (
    `${header}\n\n${body}\n\n` +
    `${status.month}: month to date ≈ ${usd(status.monthToDateUsd)}, ` +
    `projected ≈ ${usd(status.projectedUsd)} if what runs now keeps running${budget}` +
    estimated
  )
}
