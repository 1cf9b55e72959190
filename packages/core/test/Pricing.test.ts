import { assert, describe, it } from "@effect/vitest"
import { Either } from "effect"
import {
  estimate,
  FLY_PRICES,
  humanDuration,
  usd,
  withOverride,
} from "../src/Pricing.ts"

const HOURS = 720

// Fly's published monthly (30-day) prices, by hand: the blog's preset table,
// the pricing page's extra-RAM rate, and the cost-management page's sjc rows.
const published: ReadonlyArray<
  readonly [string, number, number, string, number]
> = [
  ["shared", 1, 256, "iad", 1.94],
  ["shared", 1, 512, "iad", 3.19],
  ["shared", 1, 1024, "iad", 5.7],
  ["shared", 1, 2048, "iad", 10.7],
  ["shared", 2, 512, "iad", 3.89],
  ["shared", 4, 1024, "iad", 7.78],
  ["shared", 8, 2048, "iad", 15.55],
  ["performance", 1, 2048, "iad", 31.0],
  ["performance", 1, 4096, "iad", 41.01],
  ["performance", 2, 4096, "iad", 62.0],
  ["performance", 4, 8192, "iad", 124.0],
  ["performance", 8, 16384, "iad", 248.0],
  ["performance", 16, 32768, "iad", 496.0],
  ["shared", 1, 256, "sjc", 2.32],
  ["shared", 1, 512, "sjc", 3.81],
  ["shared", 1, 1024, "sjc", 6.79],
]

describe("price estimates", () => {
  it("match Fly's published prices within 1 % for every preset", () => {
    for (const [kind, cpus, memory, region, monthly] of published) {
      const price = estimate(
        FLY_PRICES,
        { cpu_kind: kind, cpus, memory_mb: memory },
        region,
      )
      const expected = monthly / HOURS
      assert.approximately(
        price.hourly,
        expected,
        expected * 0.01,
        `${kind}-${cpus}x ${memory}MB in ${region}`,
      )
    }
  })

  it("marks estimates for unknown regions, sizes and GPUs", () => {
    const ams = estimate(FLY_PRICES, { cpu_kind: "shared", cpus: 1 }, "ams")
    const sjc = estimate(FLY_PRICES, { cpu_kind: "shared", cpus: 1 }, "sjc")
    const unknown = estimate(FLY_PRICES, undefined, "sjc")
    const gpu = estimate(
      FLY_PRICES,
      {
        cpu_kind: "performance",
        cpus: 8,
        memory_mb: 32768,
        gpu_kind: "h100",
        gpus: 1,
      },
      "sjc",
    )
    assert.deepStrictEqual(
      [ams.exact, ams.caveat, sjc.exact, sjc.caveat],
      [false, "baseline price for region ams", true, undefined],
    )
    assert.deepStrictEqual(
      [unknown.exact, unknown.caveat],
      [false, "unknown size, priced as shared-cpu-1x"],
    )
    assert.deepStrictEqual([gpu.exact, gpu.caveat], [false, "unknown GPU h100"])
    assert.approximately(unknown.hourly, 2.32 / HOURS, 0.0001)
  })

  it("adds the hourly GPU rate on top of the machine", () => {
    const a10 = estimate(
      FLY_PRICES,
      {
        cpu_kind: "performance",
        cpus: 8,
        memory_mb: 32768,
        gpu_kind: "a10",
        gpus: 1,
      },
      "iad",
    )
    assert.approximately(a10.hourly, (8 * 31 + 16 * 5) / HOURS + 0.75, 1e-9)
  })

  it("prices a stopped machine's rootfs", () => {
    const price = estimate(FLY_PRICES, { cpus: 1 }, "iad")
    assert.approximately(price.idleHourly, 0.15 / HOURS, 1e-12)
  })

  it("takes overrides for any price, region or exact preset", () => {
    const prices = Either.getOrThrow(
      withOverride(
        '{"sharedCpuMonthly": 2, "regions": {"ams": 1.5}, "presets": {"shared-cpu-1x 256MB": 3}}',
      ),
    )
    assert.strictEqual(prices.performanceCpuMonthly, 31)
    assert.strictEqual(prices.regions.sjc, 2.32 / 1.94)
    const preset = estimate(prices, { cpus: 1 }, "ams", "shared-cpu-1x 256MB")
    const formula = estimate(prices, { cpus: 2, memory_mb: 512 }, "ams")
    assert.approximately(preset.hourly, (3 * 1.5) / HOURS, 1e-12)
    assert.approximately(formula.hourly, (2 * 2 * 1.5) / HOURS, 1e-12)
    assert.isTrue(Either.isLeft(withOverride('{"sharedCpuMonthly": "cheap"}')))
    assert.isTrue(Either.isLeft(withOverride("not json")))
    // A misspelt key names itself instead of leaving Fly's price in place.
    const typo = withOverride('{"sharedCpuMonthy": 2}')
    assert.isTrue(Either.isLeft(typo))
    assert.include(Either.isLeft(typo) ? typo.left : "", '"sharedCpuMonthy"')
  })

  it("formats money and durations for people", () => {
    assert.deepStrictEqual(
      [usd(0), usd(0.0026944), usd(0.42), usd(1234.5)],
      ["$0.00", "$0.0027", "$0.42", "$1,234.50"],
    )
    assert.deepStrictEqual(
      [
        humanDuration(45_000),
        humanDuration(22_320_000),
        humanDuration(3 * 86_400_000 + 4 * 3_600_000),
        humanDuration(7_200_000),
      ],
      ["45 s", "6 h 12 min", "3 d 4 h", "2 h"],
    )
  })
})
