"""PNG plots of a bench run (latency distribution, throughput over time) and of a sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .stats import RequestRecord, throughput_timeline


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; works without a display
    import matplotlib.pyplot as plt

    return plt


def moving_average(values: list[float], window: int) -> list[float]:
    """Centered moving average; the window shrinks at the edges so the curve keeps its length."""
    half = window // 2
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - half): i + half + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def plot_run(records: list[RequestRecord], duration_s: float, title: str, path: str | Path) -> None:
    plt = _pyplot()
    ok = [r for r in records if r.ok]
    fig, (ax_lat, ax_tp) = plt.subplots(1, 2, figsize=(11, 4))
    latencies = [r.latency_s for r in ok]
    ttfb = [r.first_block_s for r in ok if r.first_block_s is not None]
    bins = 30
    if latencies:
        ax_lat.hist(latencies, bins=bins, alpha=0.7, label=f"end-to-end (n={len(latencies)})")
    if ttfb:
        ax_lat.hist(ttfb, bins=bins, alpha=0.7, label="time to first block")
    ax_lat.set_xlabel("seconds")
    ax_lat.set_ylabel("requests")
    ax_lat.set_title("latency distribution")
    ax_lat.legend()

    timeline = throughput_timeline(records, duration_s)
    t = timeline["t_s"]
    # Blocks of concurrent requests land together, so per-bin rates are bursty: show them faint
    # and a moving average (5 bins) bold, with the run's mean as a dashed line.
    ax_tp.plot(t, timeline["output_tokens_per_s"], color="tab:blue", alpha=0.25)
    smooth = moving_average(timeline["output_tokens_per_s"], 5)
    ax_tp.plot(t, smooth, color="tab:blue", label="output tokens/s")
    tokens = sum(r.output_tokens or 0 for r in ok)
    if duration_s > 0:
        ax_tp.axhline(tokens / duration_s, color="tab:blue", linestyle="--", linewidth=1, label="run mean")
    ax_tp.set_xlabel("time since start (s)")
    ax_tp.set_ylabel("output tokens/s", color="tab:blue")
    ax_req = ax_tp.twinx()
    ax_req.plot(t, moving_average(timeline["requests_per_s"], 5), color="tab:orange", alpha=0.8)
    ax_req.set_ylabel("requests/s finished (moving avg)", color="tab:orange")
    ax_tp.legend(loc="upper left", fontsize="small")
    ax_tp.set_title("throughput over time")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_sweep(levels: list[int], summaries: list[dict[str, Any]], title: str, path: str | Path) -> None:
    plt = _pyplot()
    fig, (ax_tp, ax_lat) = plt.subplots(1, 2, figsize=(11, 4))
    ax_tp.plot(levels, [s["output_token_throughput_tps"] for s in summaries], "o-", color="tab:blue")
    ax_tp.set_xlabel("concurrency")
    ax_tp.set_ylabel("output tokens/s", color="tab:blue")
    ax_tp.set_xscale("log", base=2)
    ax_tp.set_xticks(levels, [str(c) for c in levels])
    ax_rps = ax_tp.twinx()
    ax_rps.plot(levels, [s["request_throughput_rps"] for s in summaries], "s--", color="tab:orange")
    ax_rps.set_ylabel("requests/s", color="tab:orange")
    ax_tp.set_title("throughput")

    for key, label, style in (("latency_s", "e2e", "-"), ("time_to_first_block_s", "first block", ":")):
        for q in ("p50", "p99"):
            ys = [(s[key] or {}).get(q) for s in summaries]
            if any(y is not None for y in ys):
                ax_lat.plot(levels, [y if y is not None else float("nan") for y in ys], "o" + style,
                            label=f"{label} {q}")
    ax_lat.set_xlabel("concurrency")
    ax_lat.set_ylabel("seconds")
    ax_lat.set_xscale("log", base=2)
    ax_lat.set_xticks(levels, [str(c) for c in levels])
    ax_lat.set_title("latency")
    ax_lat.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
