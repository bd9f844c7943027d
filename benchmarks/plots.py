"""PNG plots of the scaling figures: ``plots.py OUT_DIR DEST_DIR`` prints the files it wrote.

Run by report.py in an interpreter with matplotlib (benchmarks/.venv-official).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLORS = {"ours": "tab:blue", "official": "tab:orange"}


def triggerer(out: Path, dest: Path) -> list[str]:
    path = out / "triggerer.json"
    if not path.exists():
        return []
    samples = [s for s in json.loads(path.read_text())["samples"] if "error" not in s and s.get("period") == 1.0]
    metrics = [
        ("cpu_ms_per_poll", "CPU ms per poll", True),
        ("polls_per_s", "polls/s achieved (dashed: offered)", True),
        ("connections_opened_total", "TCP connections opened", True),
        ("lag_ms_p99", "event-loop lag p99 (ms)", True),
        ("rss_peak_mib", "peak RSS (MiB)", False),
    ]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8))
    for ax, (key, title, logy) in zip(axes, metrics, strict=False):
        for provider in ("ours", "official"):
            groups = defaultdict(list)
            for s in samples:
                if s["provider"] == provider and s.get(key) is not None:
                    groups[s["n"]].append(s[key])
            if not groups:
                continue
            ns = sorted(groups)
            meds = [statistics.median(groups[n]) for n in ns]
            lows = [meds[i] - min(groups[n]) for i, n in enumerate(ns)]
            highs = [max(groups[n]) - meds[i] for i, n in enumerate(ns)]
            ax.errorbar(ns, meds, yerr=[lows, highs], marker="o", capsize=3, label=provider, color=COLORS[provider])
        if key == "polls_per_s":
            ns = sorted({s["n"] for s in samples})
            ax.plot(ns, ns, linestyle="--", color="grey", label="offered")
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("concurrent triggers N (1 s period)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    name = "triggerer_scaling.png"
    fig.savefig(dest / name, dpi=90)
    return [name]


def latency(out: Path, dest: Path) -> list[str]:
    path = out / "latency.json"
    if not path.exists():
        return []
    samples = json.loads(path.read_text())["samples"]
    classes = [c for c in ("5s", "60s", "10min") if any(s["class"] == c for s in samples)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, title in ((axes[0], "latency_s", "detection latency (s)"), (axes[1], "runs_get", "runs/get per run")):
        for offset, provider in ((-0.15, "ours"), (0.15, "official")):
            for i, c in enumerate(classes):
                values = [s[key] for s in samples if s["class"] == c and s["provider"] == provider]
                ax.scatter([i + offset] * len(values), values, color=COLORS[provider], alpha=0.6, s=18,
                           label=provider if i == 0 else None)
                if values:
                    ax.hlines(statistics.median(values), i + offset - 0.1, i + offset + 0.1, color=COLORS[provider])
        ax.set_xticks(range(len(classes)), [f"{c} run" for c in classes])
        ax.set_title(title + " at default settings", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    name = "detection_latency.png"
    fig.savefig(dest / name, dpi=90)
    return [name]


def scale(out: Path, dest: Path) -> list[str]:
    path = out / "scale.json"
    if not path.exists():
        return []
    samples = [s for s in json.loads(path.read_text())["samples"] if s["scenario"] == "one"]
    if not samples:
        return []
    fig, (rate, latency) = plt.subplots(1, 2, figsize=(12, 4))
    for s in samples:
        color = COLORS[s["provider"]]
        seconds = [t for t, _ in s["timeline"]["per_second"]]
        rate.plot(seconds, [v[0] for _, v in s["timeline"]["per_second"]], color=color, label=f"{s['provider']} sent")
        rate.plot(seconds, [v[1] for _, v in s["timeline"]["per_second"]], color=color, linestyle=":",
                  label=f"{s['provider']} 429")
        points = s["timeline"]["latency"]
        latency.scatter([p[0] for p in points], [p[1] for p in points], s=3, color=color, label=s["provider"])
    rate.set_title("API requests per second (runs/get limit: 100/s)")
    rate.set_xlabel("seconds since the triggers started")
    rate.legend()
    latency.set_title("detection latency (s) by the run's end")
    latency.set_xlabel("run ended at (s since the triggers started)")
    latency.set_yscale("log")
    latency.legend()
    fig.tight_layout()
    name = "scale.png"
    fig.savefig(dest / name, dpi=90)
    return [name]


def main() -> None:
    out, dest = Path(sys.argv[1]), Path(sys.argv[2])
    dest.mkdir(parents=True, exist_ok=True)
    print(" ".join(triggerer(out, dest) + latency(out, dest) + scale(out, dest)))


if __name__ == "__main__":
    main()
