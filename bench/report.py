"""Text reports of bench summaries: one block per run, one table per sweep."""

from __future__ import annotations

from typing import Any


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _dist_line(name: str, d: dict[str, float] | None) -> str:
    if d is None:
        return f"{name:<28}n/a"
    return (f"{name:<28}p50 {d['p50']:.3f}  p90 {d['p90']:.3f}  p99 {d['p99']:.3f}  "
            f"mean {d['mean']:.3f}  max {d['max']:.3f}")


def format_summary(s: dict[str, Any], label: str) -> str:
    lines = [
        f"=== {label} ===",
        f"{'requests':<28}{s['completed']} ok / {s['num_requests']} sent in {s['duration_s']:.2f} s",
        f"{'request throughput':<28}{s['request_throughput_rps']:.2f} req/s",
        f"{'output token throughput':<28}{s['output_token_throughput_tps']:.1f} tokens/s "
        f"({s['total_output_tokens']} tokens; usage from {s['usage_reported']} answers)",
        _dist_line("time to first block (s)", s["time_to_first_block_s"]),
        _dist_line("end-to-end latency (s)", s["latency_s"]),
        f"{'tokens per step':<28}{_fmt(s['tokens_per_step'], 2)}",
        f"{'steps per block':<28}{_fmt(s['steps_per_block'], 2)}",
        f"{'blocks (chunks) per answer':<28}{_fmt(s['chunks_per_request'], 2)}",
        f"{'finish reasons':<28}{_kv(s['finish_reasons'])}",
        f"{'errors':<28}{_kv(s['errors']) or 'none'}",
    ]
    return "\n".join(lines)


def _kv(d: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(d.items()))


def format_sweep_table(levels: list[int], summaries: list[dict[str, Any]]) -> str:
    header = ("conc", "req/s", "out tok/s", "TTFB p50", "TTFB p99", "e2e p50", "e2e p90", "e2e p99",
              "tok/step", "errors")
    rows = [header]
    for c, s in zip(levels, summaries, strict=True):
        ttfb, lat = s["time_to_first_block_s"] or {}, s["latency_s"] or {}
        rows.append((
            str(c), f"{s['request_throughput_rps']:.2f}", f"{s['output_token_throughput_tps']:.1f}",
            _fmt(ttfb.get("p50")), _fmt(ttfb.get("p99")), _fmt(lat.get("p50")), _fmt(lat.get("p90")),
            _fmt(lat.get("p99")), _fmt(s["tokens_per_step"], 2), str(s["failed"]),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    out = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)
