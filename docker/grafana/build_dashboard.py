"""Writes dashboards/diffuserve.json: the Grafana dashboard of diffuserve's metrics.

The JSON is generated so that panels stay uniform and the queries live in one readable
table; run `python docker/grafana/build_dashboard.py` after editing, and commit both.
A test checks the committed JSON equals this script's output, and that every metric
name queried here is one the running server exports.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "diffuserve.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = '{model=~"$model"}'


def quantiles(metric: str, qs: tuple[float, ...] = (0.5, 0.9, 0.99)) -> list[tuple[str, str]]:
    rate = f"rate({metric}_bucket{SEL}[$__rate_interval])"
    return [(f"histogram_quantile({q}, sum by (le) ({rate}))", f"p{round(q * 100)}") for q in qs]


# (title, unit, [(expr, legend)], width)
PANELS: list[tuple[str, str, list[tuple[str, str]], int]] = [
    ("Output throughput", "tokens/s", [
        (f"sum(rate(diffuserve_generation_tokens_total{SEL}[$__rate_interval]))", "generated tokens/s"),
        (f"sum(rate(diffuserve_prompt_tokens_total{SEL}[$__rate_interval]))", "prompt tokens/s"),
    ], 12),
    ("Requests by status", "reqps", [
        (f"sum by (status) (rate(diffuserve_requests_total{SEL}[$__rate_interval]))", "{{status}}"),
    ], 12),
    ("End-to-end latency", "s", quantiles("diffuserve_e2e_request_latency_seconds"), 8),
    ("Time to first block", "s", quantiles("diffuserve_time_to_first_block_seconds"), 8),
    ("Queue time", "s", quantiles("diffuserve_request_queue_time_seconds"), 8),
    ("Queue depth (waiting requests)", "short", [
        (f"sum(diffuserve_requests_waiting{SEL})", "waiting"),
    ], 8),
    ("Running requests", "short", [
        (f"sum(diffuserve_requests_running{SEL})", "running"),
    ], 8),
    ("KV cache usage", "percentunit", [
        (f"max(diffuserve_kv_cache_usage_ratio{SEL})", "used / total pages"),
    ], 8),
    ("Tokens committed per step", "short", [
        (f"sum(rate(diffuserve_tokens_committed_per_step_sum{SEL}[$__rate_interval])) / "
         f"sum(rate(diffuserve_tokens_committed_per_step_count{SEL}[$__rate_interval]))", "mean"),
        *quantiles("diffuserve_tokens_committed_per_step", (0.5, 0.9)),
    ], 8),
    ("Engine step duration", "s", quantiles("diffuserve_engine_step_duration_seconds"), 8),
    # Parallel decoding at work (threshold / threshold_factor): the share of a sequence's steps
    # that commit more than one token; 0 under the one-token-a-step schedule.
    ("Steps committing > 1 token", "percentunit", [
        (f"(sum(rate(diffuserve_tokens_committed_per_step_count{SEL}[$__rate_interval])) - "
         f"sum(rate(diffuserve_tokens_committed_per_step_bucket{{model=~\"$model\", le=\"1.0\"}}"
         f"[$__rate_interval]))) / clamp_min(sum(rate(diffuserve_tokens_committed_per_step_count{SEL}"
         f"[$__rate_interval])), 1e-9)", "parallel share"),
    ], 8),
    ("Denoising work", "ops", [
        (f"sum(rate(diffuserve_engine_steps_total{SEL}[$__rate_interval]))", "engine steps/s"),
        (f"sum(rate(diffuserve_denoising_steps_total{SEL}[$__rate_interval]))", "request denoising steps/s"),
        (f"sum(rate(diffuserve_preemptions_total{SEL}[$__rate_interval]))", "preemptions/s"),
        (f"sum(rate(diffuserve_cache_recomputes_total{SEL}[$__rate_interval]))", "cache recomputes/s"),
    ], 8),
    ("Errors", "reqps", [
        ('sum by (status) (rate(diffuserve_requests_total{model=~"$model", status!~"2.."}'
         "[$__rate_interval]))", "{{status}}"),
        ('sum by (finish_reason) (rate(diffuserve_requests_total{model=~"$model", '
         'finish_reason=~"error|abort"}[$__rate_interval]))', "finish {{finish_reason}}"),
    ], 12),
    ("Error ratio (5xx / all)", "percentunit", [
        (f'sum(rate(diffuserve_requests_total{{model=~"$model", status=~"5.."}}[$__rate_interval])) / '
         f"clamp_min(sum(rate(diffuserve_requests_total{SEL}[$__rate_interval])), 1e-9)", "5xx ratio"),
    ], 12),
    # What the model computes: masked blocks, against committed tokens computed into the KV cache
    # (prompts, finished blocks, cache refreshes). A growing cache share means refreshes or long
    # prompts dominate; cache_refresh trades it against agreement with exact mode.
    ("Model tokens by kind", "tokens/s", [
        (f"sum by (kind) (rate(diffuserve_engine_query_tokens_total{SEL}[$__rate_interval]))", "{{kind}}"),
    ], 24),
]


def panel(pid: int, title: str, unit: str, targets: list[tuple[str, str]], x: int, y: int, w: int) -> dict:
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": 8},
        "fieldConfig": {"defaults": {"unit": unit, "min": 0}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def build() -> dict:
    panels, x, y = [], 0, 0
    for pid, (title, unit, targets, w) in enumerate(PANELS, 1):
        if x + w > 24:
            x, y = 0, y + 8
        panels.append(panel(pid, title, unit, targets, x, y, w))
        x += w
    return {
        "uid": "diffuserve",
        "title": "diffuserve",
        "tags": ["diffuserve", "llm", "diffusion"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0},
            {"name": "model", "label": "Model", "type": "query", "datasource": DS,
             "query": {"query": "label_values(diffuserve_requests_running, model)", "refId": "model"},
             "definition": "label_values(diffuserve_requests_running, model)",
             "includeAll": True, "multi": True, "current": {"text": "All", "value": "$__all"},
             "allValue": ".*", "refresh": 2, "hide": 0},
        ]},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
