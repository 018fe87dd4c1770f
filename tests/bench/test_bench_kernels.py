"""`diffuserve bench kernels` runs end to end on the CPU with tiny shapes and writes its JSON."""

from __future__ import annotations

import argparse
import json

from diffuserve.bench import kernels as bench


def test_bench_runs_on_cpu(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out = tmp_path / "bench.json"
    args = parser.parse_args(
        ["--device", "cpu", "--concurrency", "1", "2", "--vocab", "257", "--iters", "2", "--warmup", "1",
         "--backends", "eager", "triton", "--temperature", "0.5", "--json", str(out)]
    )  # fmt: skip
    assert bench.run(args) == 0
    text = capsys.readouterr().out
    assert "triton: skipped (CUDA only)" in text
    data = json.loads(out.read_text())
    rows = [(r["kind"], r["rows"], r["backend"]) for r in data["results"]]
    assert rows == [
        ("row", 32, "eager"),
        ("select", 32, "eager"),
        ("row", 64, "eager"),
        ("select", 64, "eager"),
    ]
    assert all(r["ms"] > 0 for r in data["results"])
