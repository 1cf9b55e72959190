import {
  Effect,
  Metric,
  type MetricKey,
  type MetricPair,
  MetricState,
} from "effect"

// Effect's metric snapshot in the Prometheus text exposition format 0.0.4.

const escapeLabel = (value: string) =>
  value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"')

const labels = (
  key: MetricKey.MetricKey.Untyped,
  extra: ReadonlyArray<readonly [string, string]> = [],
) => {
  const pairs = [
    ...key.tags.map((tag) => [tag.key, tag.value] as const),
    ...extra,
  ]
  return pairs.length === 0
    ? ""
    : `{${pairs.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",")}}`
}

const number = (value: number | bigint) =>
  typeof value === "bigint"
    ? value.toString()
    : Number.isFinite(value)
      ? String(value)
      : value > 0
        ? "+Inf"
        : value < 0
          ? "-Inf"
          : "NaN"

export const render = (pairs: ReadonlyArray<MetricPair.MetricPair.Untyped>) => {
  const families = new Map<
    string,
    { type: string; help: string | undefined; lines: Array<string> }
  >()
  const family = (name: string, type: string, help: string | undefined) => {
    const existing = families.get(name)
    if (existing !== undefined) return existing.lines
    const created = { type, help, lines: [] as Array<string> }
    families.set(name, created)
    return created.lines
  }
  for (const { metricKey: key, metricState: state } of pairs) {
    const help =
      key.description._tag === "Some" ? key.description.value : undefined
    if (MetricState.isCounterState(state)) {
      family(key.name, "counter", help).push(
        `${key.name}${labels(key)} ${number(state.count)}`,
      )
    } else if (MetricState.isGaugeState(state)) {
      family(key.name, "gauge", help).push(
        `${key.name}${labels(key)} ${number(state.value)}`,
      )
    } else if (MetricState.isHistogramState(state)) {
      const lines = family(key.name, "histogram", help)
      for (const [bound, count] of state.buckets)
        lines.push(
          `${key.name}_bucket${labels(key, [["le", number(bound)]])} ${count}`,
        )
      if (!state.buckets.some(([bound]) => bound === Infinity))
        lines.push(
          `${key.name}_bucket${labels(key, [["le", "+Inf"]])} ${state.count}`,
        )
      lines.push(`${key.name}_sum${labels(key)} ${number(state.sum)}`)
      lines.push(`${key.name}_count${labels(key)} ${state.count}`)
    }
  }
  return (
    [...families.entries()]
      .sort(([a], [b]) => a.localeCompare(b))
      .flatMap(([name, { type, help, lines }]) => [
        ...(help === undefined ? [] : [`# HELP ${name} ${help}`]),
        `# TYPE ${name} ${type}`,
        ...lines,
      ])
      .join("\n") + "\n"
  )
}

/** The monitor's own metrics (`flymon_*`), as Prometheus scrapes them. */
export const prometheusText = Effect.map(Metric.snapshot, (pairs) =>
  render(pairs.filter((pair) => pair.metricKey.name.startsWith("flymon_"))),
)
