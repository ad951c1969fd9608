"""`make bench`'s plot: one TCP stream and ping RTT p50, kernel VXLAN vs each overlayd variant.

A small PNG next to the run's JSON and Markdown (tools/bench.py), so that a run
can be compared with the last at a glance. matplotlib is optional (the `bench`
extra): without it `render_chart` returns False and the bench says so.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any


def have_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def chart_series(results: dict[str, Any]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """What the plot shows: {panel: {group: {series: [per-run values]}}}.

    Panels "throughput" (one TCP stream, Gbit/s) and "rtt" (ping p50, us); groups are the
    L2 directions and the routed path; series are the kernel's VXLAN and each overlayd mode
    (on the routed path: vxlan-by-hand as the kernel's, userspace as overlayd's).
    """
    runs = results.get("runs") or {}
    routed = ((results.get("backends") or {}).get("routed") or {}).get("runs") or {}
    label = {"kernel": "kernel VXLAN"}
    panels: dict[str, dict[str, dict[str, list[float]]]] = {"throughput": {}, "rtt": {}}
    for panel, group, key in (("throughput", "L2 a->b", "tcp_a_to_b_gbit_s"),
                              ("throughput", "L2 b->a", "tcp_b_to_a_gbit_s"), ("rtt", "L2", "ping_p50_us")):
        got = {label.get(m, m): [v for v in per.get(key, []) if v is not None] for m, per in runs.items()}
        if any(got.values()):
            panels[panel][group] = got
    for panel, key in (("throughput", "tcp_gbit_s"), ("rtt", "ping_p50_us")):
        got = {name: routed[mode][key] for mode, name in (("vxlan-by-hand", "kernel VXLAN"), ("userspace", "overlayd"))
               if mode in routed}
        if got:
            panels[panel]["routed pod to pod"] = got
    return {k: v for k, v in panels.items() if v}


def render_chart(results: dict[str, Any], path: Path) -> bool:
    """A small PNG: throughput and RTT, kernel VXLAN vs overlayd (each variant), median bars with the
    runs' min-max; False when matplotlib is not importable or nothing was measured."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = chart_series(results)
    if not panels:
        return False
    series = list(dict.fromkeys(s for groups in panels.values() for per in groups.values() for s in per))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    titles = {"throughput": "one TCP stream (Gbit/s, higher is better)", "rtt": "ping RTT p50 (us, lower is better)"}
    width = 0.8 / max(1, len(series))
    for ax, (panel, groups) in zip(axes[0], panels.items()):
        for j, name in enumerate(series):
            xs, meds, lo, hi = [], [], [], []
            for i, per in enumerate(groups.values()):
                values = per.get(name)
                if values:
                    med = statistics.median(values)
                    xs.append(i + (j - (len(series) - 1) / 2) * width)
                    meds.append(med)
                    lo.append(med - min(values))
                    hi.append(max(values) - med)
            if xs:
                ax.bar(xs, meds, width=width, yerr=[lo, hi], capsize=2, label=name, color=f"C{j}")
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(list(groups), fontsize=8)
        ax.set_yscale("log")
        ax.set_title(titles[panel], fontsize=9)
    axes[0][0].legend(fontsize=7)
    m = results.get("machine", {})
    fig.suptitle(f"make bench {results.get('when', '')[:16]}: {m.get('cpu_model', '?')}, {m.get('cpus', '?')} cores "
                 f"(bars: median, whiskers: min-max of {results.get('config', {}).get('runs', '?')} runs)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True
