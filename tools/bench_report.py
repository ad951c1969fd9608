"""`make bench`'s report, pure: per-pair ratios with their spread, the machine, Markdown, the last run.

Every comparison in the bench is taken in pairs: the measured side and its
reference (overlayd and the kernel's VXLAN, say) measured back to back, once
per run, so both see the same load on a shared machine. A pair gives one
ratio; a comparison is reported as the median of its pairs' ratios with
their min-max, and flagged `noisy` when max - min is wider than 30% of the
median (DECISIONS: printed with the flag, not withheld; not a result).

Nothing here measures or touches the system: unit tests feed it canned numbers.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

NOISY = 0.30  # a spread wider than this fraction of the median: noisy, not a result
MIN_PAIRS = 5  # fewer pairs than this (--quick, --runs 3): printed, but not a result either


def pair_ratios(values: list[float | None], references: list[float | None]) -> list[float]:
    """The ratio of each pair (value i / reference i); pairs missing a side or with a zero reference are left out."""
    return [v / r for v, r in zip(values, references) if v is not None and r]


def spread(values: list[float]) -> dict[str, Any]:
    """{median, min, max, noisy} of per-pair ratios, rounded to 3 digits."""
    med = statistics.median(values)
    return {"median": round(med, 3), "min": round(min(values), 3), "max": round(max(values), 3),
            "noisy": bool(med) and max(values) - min(values) > NOISY * med}


def machine_line(m: dict[str, Any]) -> str:
    """One line naming the machine: CPU model, cores, kernel, Python, load average before and after."""
    def load(key: str) -> str:
        got = m.get(key)
        return " ".join(f"{x:.2f}" for x in got) if got else "?"

    return (f"{m.get('cpu_model') or 'unknown CPU'}, {m.get('cpus', '?')} cores, Linux {m.get('kernel', '?')}, "
            f"Python {m.get('python', '?')}; load average (1, 5, 15 min) before {load('loadavg_before')}"
            + (f", after {load('loadavg_after')}" if "loadavg_after" in m else ""))


def ratio_rows(results: dict[str, Any], metrics: tuple[Any, ...]) -> list[dict[str, Any]]:
    """Every ratio of a results dict, one row each: {id, label, reference, median, min, max, noisy, pairs}.

    `metrics` are tools.bench's DATA_METRICS (key, label, higher_is_better). Rows come from the
    L2 data plane (each overlayd mode against the kernel), the routed path (bench_backends) and
    the FDB-size bench (bench_switch); `id` is stable from run to run, for the comparison.
    """
    rows: list[dict[str, Any]] = []
    spreads = results.get("summary", {}).get("spreads", {})
    for mode, per in spreads.items():
        for m in metrics:
            s = per.get(m.key)
            if s is not None:
                rows.append({"id": f"{mode}/kernel {m.key}", "label": f"L2 {m.label}", "mode": mode,
                             "reference": "kernel", "better": "higher" if m.higher_is_better else "lower", **s})
    routed = (results.get("backends") or {}).get("routed") or {}
    labels = {"tcp_gbit_s": ("routed pod to pod, TCP 1 stream", "higher"),
              "ping_p50_us": ("routed pod to pod, ping RTT p50", "lower"),
              "ping_p99_us": ("routed pod to pod, ping RTT p99", "lower")}
    for mode, per in routed.get("ratios", {}).items():
        for key, s in per.items():
            label, better = labels.get(key, (f"routed {key}", "higher"))
            rows.append({"id": f"routed {mode}/{s['reference']} {key}", "label": label, "mode": mode,
                         "better": better, **s})
    table = results.get("table_size")
    if table:
        rows.append({"id": "switch fdb large/small frames_per_s",
                     "label": f"Switch 64 B known unicast, FDB {table['large']:,} vs {table['small']:,} entries",
                     "mode": "overlayd", "reference": f"{table['small']:,} entries", "better": "higher",
                     **table["ratio"]})
    pairs = results.get("config", {}).get("runs")
    for row in rows:
        row.setdefault("pairs", table["rounds"] if row["id"].startswith("switch") and table else pairs)
    return rows


def previous_results(out: Path, before: str | None = None) -> dict[str, Any] | None:
    """The newest bench-*.json in `out` (older than the name `before`, when given), or None."""
    names = sorted(p for p in out.glob("bench-*.json") if before is None or p.name < before)
    for path in reversed(names):
        try:
            return json.loads(path.read_text()) | {"_path": str(path)}
        except (OSError, ValueError):
            continue
    return None


def flag(row: dict[str, Any]) -> str:
    """"noisy", "few pairs" (fewer than MIN_PAIRS) or "" for a result."""
    if row["noisy"]:
        return "noisy"
    if not isinstance(row.get("pairs"), int) or row["pairs"] < MIN_PAIRS:
        return "few pairs"
    return ""


def _verdict(row: dict[str, Any]) -> str:
    return f"{flag(row)}: not a result" if flag(row) else "ok"


def _previous_cell(row: dict[str, Any], previous: dict[str, dict[str, Any]] | None) -> list[str]:
    if previous is None:
        return []
    p = previous.get(row["id"])
    if p is None:
        return ["-"]
    return [f"{p['median']:.3f}" + (" (noisy)" if p["noisy"] else "")]


def render_ratios(rows: list[dict[str, Any]], previous_rows: list[dict[str, Any]] | None = None) -> str:
    """The ratio table as plain text: median, min-max, flag, and the previous run's median."""
    previous = {r["id"]: r for r in previous_rows} if previous_rows is not None else None
    head = ["ratio (median of pairs)", "against", "median", "min-max", "pairs", "flag"]
    if previous is not None:
        head.append("last run")
    table = [head]
    for r in rows:
        table.append([r["label"] + ("" if r["mode"] in ("overlayd", "userspace") else f" [{r['mode']}]"),
                      r["reference"], f"{r['median']:.3f}", f"{r['min']:.3f}-{r['max']:.3f}",
                      str(r.get("pairs") or "?"), flag(r),
                      *_previous_cell(r, previous)])
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = []
    for i, row in enumerate(table):
        lines.append("  ".join(c.ljust(widths[j]) if j < 2 else c.rjust(widths[j])
                               for j, c in enumerate(row)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown(results: dict[str, Any], rows: list[dict[str, Any]],
                    previous: dict[str, Any] | None = None,
                    previous_rows: list[dict[str, Any]] | None = None) -> str:
    """The run as Markdown: when, the machine, the settings, the ratio table (the last run's beside)."""
    cfg = results.get("config", {})
    out = [f"# make bench, {results.get('when', '?')}", "",
           f"Machine: {machine_line(results.get('machine', {}))}.", "",
           f"Settings: {cfg.get('runs', '?')} interleaved pairs, {cfg.get('seconds', '?')} s per iperf3 test, "
           f"{cfg.get('pings', '?')} pings; parts: {', '.join(cfg.get('parts', [])) or '?'}"
           + (f"; variants: {', '.join(cfg['variants'])}" if cfg.get("variants") else "") + ".", "",
           f"Each ratio is the median of per-pair ratios (min-max beside it); `noisy` marks a spread wider "
           f"than {NOISY:.0%} of the median, `few pairs` fewer than {MIN_PAIRS} pairs: such a ratio is not "
           f"a result.", ""]
    head = ["ratio", "against", "better", "median", "min-max", "pairs", "verdict"]
    prev = {r["id"]: r for r in previous_rows} if previous_rows is not None else None
    if prev is not None:
        head.append(f"last run ({previous.get('when', '?') if previous else '?'})")
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "|".join("---" if i < 3 or i == 6 else "---:" for i in range(len(head))) + "|")
    for r in rows:
        label = r["label"] + ("" if r["mode"] in ("overlayd", "userspace") else f" [{r['mode']}]")
        cells = [label, r["reference"], r["better"], f"{r['median']:.3f}", f"{r['min']:.3f}-{r['max']:.3f}",
                 str(r.get("pairs") or "?"), _verdict(r), *_previous_cell(r, prev)]
        out.append("| " + " | ".join(cells) + " |")
    if not rows:
        out.append("| (no ratios measured) |" + " |" * (len(head) - 1))
    return "\n".join(out) + "\n"
