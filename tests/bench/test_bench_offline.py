"""`diffuserve bench offline` smoke test on the random-weights `tiny` shape (the 8B shapes need a GPU)."""

from __future__ import annotations

import argparse
import json

from diffuserve.bench import offline as bench_offline


def test_bench_offline_tiny_shape(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    bench_offline.add_arguments(parser)
    out = tmp_path / "bench.json"
    args = parser.parse_args([
        "--shape", "tiny", "--num-prompts", "3", "--reference-prompts", "2", "--max-tokens", "32",
        "--block-length", "16", "--steps", "8", "--concurrency", "1,3", "--device", "cpu",
        "--kv-cache-memory", "16MiB", "--json", str(out),
    ])  # fmt: skip
    assert bench_offline.run(args) == 0
    rows = json.loads(out.read_text())
    names = [(r["run"], r["concurrency"]) for r in rows]
    assert names == [("reference", 1), ("schedule", 1), ("schedule", 3), ("threshold", 1),
                     ("threshold", 3), ("exact", 3)]
    by = {name: r for name, r in zip(names, rows, strict=True)}
    # EOS is suppressed and the shape has no other stop id: every answer is full length.
    assert by[("reference", 1)]["tokens"] == 2 * 32
    assert all(r["tokens"] == 3 * 32 for r in rows[1:])
    # The live oracle check: the engine's exact mode equals the reference sampler.
    assert by[("reference", 1)]["agreement_with_exact"] == 1.0
    assert by[("schedule", 1)]["tokens_per_step"] == 2.0  # 16 tokens in 8 steps
    assert all(r["tokens_per_s"] > 0 and r["peak_mem_mib"] > 0 for r in rows)
    assert "x ref" in capsys.readouterr().out


def test_bench_offline_refresh_variants_and_dtype_noise_floor(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    bench_offline.add_arguments(parser)
    out = tmp_path / "bench.json"
    args = parser.parse_args([
        "--shape", "tiny", "--num-prompts", "2", "--no-reference", "--max-tokens", "32",
        "--block-length", "16", "--steps", "1", "--concurrency", "2", "--device", "cpu",
        "--modes", "schedule,exact", "--cache-refresh", "0,1", "--compare-dtype", "bfloat16",
        "--kv-cache-memory", "16MiB", "--json", str(out),
    ])  # fmt: skip
    assert bench_offline.run(args) == 0
    rows = {r["run"]: r for r in json.loads(out.read_text())}
    assert list(rows) == ["schedule:r0", "schedule:r1", "exact", "exact-bfloat16"]
    # One step per block with a refresh at every block computes exactly what exact mode does.
    assert rows["schedule:r1"]["agreement_with_exact"] == 1.0
    assert 0.0 <= rows["exact-bfloat16"]["agreement_with_exact"] <= 1.0
    printed = capsys.readouterr().out
    assert "agreement with exact mode by answer block (0-15, 16-31)" in printed
    assert "schedule:r1 c=2   1.000 / 1.000" in printed
