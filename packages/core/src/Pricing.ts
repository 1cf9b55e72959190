import { Either, Schema } from "effect"
import type { Guest } from "./Domain.ts"

// Fly.io list prices, as published, used to estimate what machines cost.
//
// Sources, read 2026-12:
// - fly.io/docs/about/pricing (last changed 2026-08-05) and
//   fly.io/docs/about/billing (2026-06-19): started machines are billed per
//   second for their CPU/RAM preset plus extra RAM at about $5 per GB per
//   30 days; stopped and suspended machines pay only rootfs storage,
//   $0.15 per GB per 30 days; prices are per region since 2024-06.
// - fly.io/blog/new-vms-more-ram-extra-cpu-and-a-dollar-menu (2021): the
//   baseline presets, shared-cpu-1x 256 MB $1.94 and performance-1x 2 GB
//   $31.00 per 30 days, each further CPU at the same price with the same
//   memory included.
// - fly.io/docs/about/cost-management (2025-10-23): sjc shared-cpu-1x
//   256 MB $2.32, i.e. sjc ≈ 1.196 × baseline. No other region's ratio is
//   published in the docs; other regions are priced at baseline and marked
//   as an estimate.
// - GPUs were retired on 2026-08-01; the last per-GPU-hour rates are kept
//   for machines that still report one.
// Any of these can be overridden with PRICES (a JSON object, below).

export const SECONDS_PER_BILLING_MONTH = 30 * 24 * 3600

export const PriceTable = Schema.Struct({
  /** USD per 30 days for one shared CPU, 256 MB included. */
  sharedCpuMonthly: Schema.Number,
  /** USD per 30 days for one performance CPU, 2 GB included. */
  performanceCpuMonthly: Schema.Number,
  sharedIncludedMbPerCpu: Schema.Number,
  performanceIncludedMbPerCpu: Schema.Number,
  /** USD per GB of RAM beyond what the CPUs include, per 30 days. */
  extraRamGbMonthly: Schema.Number,
  /** USD per GB of root filesystem of a stopped machine, per 30 days. */
  rootfsGbMonthly: Schema.Number,
  /** Assumed rootfs size: the Machines API does not report it. */
  rootfsGb: Schema.Number,
  /** USD per GPU-hour, by `gpu_kind`. */
  gpuHourly: Schema.Record({ key: Schema.String, value: Schema.Number }),
  /** Multiplier over baseline, by region code. */
  regions: Schema.Record({ key: Schema.String, value: Schema.Number }),
  /** Exact USD per 30 days for a size label, e.g. "shared-cpu-1x 256MB". */
  presets: Schema.Record({ key: Schema.String, value: Schema.Number }),
})
export type PriceTable = typeof PriceTable.Type

export const FLY_PRICES: PriceTable = {
  sharedCpuMonthly: 1.94,
  performanceCpuMonthly: 31.0,
  sharedIncludedMbPerCpu: 256,
  performanceIncludedMbPerCpu: 2048,
  extraRamGbMonthly: 5.0,
  rootfsGbMonthly: 0.15,
  rootfsGb: 1,
  gpuHourly: {
    a10: 0.75,
    l40s: 0.7,
    "a100-pcie-40gb": 1.25,
    "a100-sxm4-80gb": 1.5,
  },
  regions: { sjc: 2.32 / 1.94 },
  presets: {},
}

const PriceOverride = Schema.partialWith(PriceTable, { exact: true })

/** Merges a JSON override (any subset of the table) over Fly's prices. */
export const withOverride = (json: string): Either.Either<PriceTable, string> =>
  // A misspelt key would silently leave Fly's price in place: refuse it.
  Schema.decodeUnknownEither(Schema.parseJson(PriceOverride), {
    onExcessProperty: "error",
  })(json).pipe(
    Either.mapLeft((error) => error.message),
    Either.map((override) => ({
      ...FLY_PRICES,
      ...override,
      gpuHourly: { ...FLY_PRICES.gpuHourly, ...override.gpuHourly },
      regions: { ...FLY_PRICES.regions, ...override.regions },
      presets: { ...FLY_PRICES.presets, ...override.presets },
    })),
  )

export interface Estimate {
  /** USD per hour while started. */
  readonly hourly: number
  /** USD per hour while stopped or suspended (rootfs). */
  readonly idleHourly: number
  /** False when the size or region was not in the table. */
  readonly exact: boolean
  /** Why the figure is only an estimate, for the alert. */
  readonly caveat: string | undefined
}

const HOURS_PER_BILLING_MONTH = SECONDS_PER_BILLING_MONTH / 3600

/** What a machine of `guest` costs per hour in `region`. */
export const estimate = (
  prices: PriceTable,
  guest: Partial<Guest> | undefined,
  region: string,
  sizeLabel?: string,
): Estimate => {
  const caveats: Array<string> = []
  const ratio = prices.regions[region]
  if (ratio === undefined) caveats.push(`baseline price for region ${region}`)
  const multiplier = ratio ?? 1
  const idleHourly =
    (prices.rootfsGb * prices.rootfsGbMonthly * multiplier) /
    HOURS_PER_BILLING_MONTH
  const preset = sizeLabel === undefined ? undefined : prices.presets[sizeLabel]
  if (preset !== undefined) {
    return {
      hourly: (preset * multiplier) / HOURS_PER_BILLING_MONTH,
      idleHourly,
      exact: caveats.length === 0,
      caveat: caveats[0],
    }
  }
  if (guest?.cpus === undefined || guest.cpus <= 0) {
    caveats.unshift("unknown size, priced as shared-cpu-1x")
  }
  const cpus = guest?.cpus && guest.cpus > 0 ? guest.cpus : 1
  const performance = guest?.cpu_kind === "performance"
  const perCpu = performance
    ? prices.performanceCpuMonthly
    : prices.sharedCpuMonthly
  const includedMb =
    cpus *
    (performance
      ? prices.performanceIncludedMbPerCpu
      : prices.sharedIncludedMbPerCpu)
  const memoryMb = guest?.memory_mb ?? includedMb
  const extraGb = Math.max(0, memoryMb - includedMb) / 1024
  const monthly = cpus * perCpu + extraGb * prices.extraRamGbMonthly
  let gpu = 0
  if (guest?.gpu_kind && guest.gpus) {
    const rate = prices.gpuHourly[guest.gpu_kind]
    if (rate === undefined) caveats.push(`unknown GPU ${guest.gpu_kind}`)
    gpu = (rate ?? 0) * guest.gpus
  }
  return {
    hourly: (monthly * multiplier) / HOURS_PER_BILLING_MONTH + gpu,
    idleHourly,
    exact: caveats.length === 0,
    caveat: caveats.length === 0 ? undefined : caveats.join("; "),
  }
}

/** `$0.42`, `$0.0027`, `$1,234.50`: enough digits to be useful. */
export const usd = (amount: number): string => {
  if (amount === 0) return "$0.00"
  if (Math.abs(amount) < 0.0001) return "< $0.0001"
  if (Math.abs(amount) < 0.01) return `$${amount.toFixed(4)}`
  return `$${amount.toLocaleString("en-US", {
    minimumFractionDigits: 2,
    maximumFractionDigits: 2,
  })}`
}

/** `6 h 12 min`, `3 d 4 h`, `45 s`. */
export const humanDuration = (ms: number): string => {
  const seconds = Math.max(0, Math.round(ms / 1000))
  const days = Math.floor(seconds / 86400)
  const hours = Math.floor((seconds % 86400) / 3600)
  const minutes = Math.floor((seconds % 3600) / 60)
  if (days > 0) return hours > 0 ? `${days} d ${hours} h` : `${days} d`
  if (hours > 0) return minutes > 0 ? `${hours} h ${minutes} min` : `${hours} h`
  if (minutes > 0) return `${minutes} min`
  return `${seconds} s`
}
