"""`diffuserve bench offline --canvas fixed` with the dual-cache and factor-rule modes (tiny shape)."""

from __future__ import annotations

import argparse
import json

import pytest
from diffuserve.bench import offline as bench_offline


def _args(*extra: str):
    parser = argparse.ArgumentParser()
    bench_offline.add_arguments(parser)
    return parser.parse_args([
        "--shape", "tiny", "--num-prompts", "2", "--no-reference", "--max-tokens", "32",
        "--block-length", "8", "--concurrency", "2", "--device", "cpu", "--kv-cache-memory", "16MiB",
        *extra,
    ])  # fmt: skip


def test_dual_modes_on_a_fixed_canvas(tmp_path):
    out = tmp_path / "bench.json"
    # One step per block and a refresh at every block: dual mode computes what exact mode does.
    args = _args("--canvas", "fixed", "--steps", "1", "--cache-refresh", "1",
                 "--modes", "schedule,dual,dual-factor,exact", "--json", str(out))
    assert bench_offline.run(args) == 0
    rows = {r["run"]: r for r in json.loads(out.read_text())}
    assert list(rows) == ["schedule", "dual", "dual-factor", "exact"]
    assert rows["dual"]["agreement_with_exact"] == 1.0
    assert all(r["tokens"] == 2 * 32 for r in rows.values())


def test_dual_modes_need_a_fixed_canvas():
    with pytest.raises(SystemExit, match="--canvas fixed"):
        bench_offline.run(_args("--modes", "dual"))
    with pytest.raises(SystemExit, match="unknown mode"):
        bench_offline.run(_args("--modes", "fast"))
