"""`diffuserve bench serve` against the real server: closed loop, open loop, sweep; JSON and PNG outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import matplotlib.image

BENCH = [sys.executable, "-m", "diffuserve.server.cli", "bench", "serve"]


def bench(server_url: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([*BENCH, "--url", server_url, "--api-key", "test-key", "--no-progress",
                           "--max-tokens", "8", "--block-length", "4", *args],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def assert_png(path) -> None:
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 300
    assert image.std() > 0.01  # something was drawn


def test_closed_loop_json_and_plot(server_url, tmp_path):
    out, png = tmp_path / "run.json", tmp_path / "run.png"
    proc = bench(server_url, "--concurrency", "3", "--num-requests", "6", "--ignore-eos",
                 "--json", str(out), "--plot", str(png))
    data = json.loads(out.read_text())
    (run,) = data["runs"]
    s = run["summary"]
    assert (s["num_requests"], s["completed"], s["errors"]) == (6, 6, {})
    assert [r["output_tokens"] for r in run["requests"]] == [8] * 6  # ignore_eos: always max_tokens
    assert s["total_output_tokens"] == 48
    assert s["output_token_throughput_tps"] > 0 and s["request_throughput_rps"] > 0
    lat, ttfb = s["latency_s"], s["time_to_first_block_s"]
    assert 0 < ttfb["p50"] <= lat["p50"] and lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert s["tokens_per_step"] > 0 and s["steps_per_block"] > 0  # reported by the server
    assert data["fields"] == {"block_length": 4, "ignore_eos": True}
    assert "output token throughput" in proc.stdout and "time to first block" in proc.stdout
    assert_png(png)


def test_open_loop_poisson_no_stream(server_url, tmp_path):
    out = tmp_path / "open.json"
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "Once upon a time"}\n{"messages": [{"role": "user", "content": "Hi"}]}\n')
    bench(server_url, "--rate", "4", "--num-requests", "5", "--no-stream", "--endpoint", "completions",
          "--prompts", str(prompts), "--json", str(out))
    (run,) = json.loads(out.read_text())["runs"]
    s = run["summary"]
    assert run["rate"] == 4.0 and run["concurrency"] is None
    assert s["completed"] == 5 and s["time_to_first_block_s"] is None  # not measurable without streaming
    starts = [r["start_s"] for r in run["requests"]]
    assert starts == sorted(starts) and starts[-1] > 0


def test_sweep_table_and_plot(server_url, tmp_path):
    out, png = tmp_path / "sweep.json", tmp_path / "sweep.png"
    proc = bench(server_url, "--sweep", "1,2", "--num-requests", "2", "--json", str(out), "--plot", str(png))
    runs = json.loads(out.read_text())["runs"]
    assert [r["concurrency"] for r in runs] == [1, 2]
    assert all(r["summary"]["completed"] == 2 for r in runs)
    lines = proc.stdout.splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.split()[:2] == ["conc", "req/s"]):]
    assert len(table) == 4 and table[2].split()[0] == "1" and table[3].split()[0] == "2"
    assert_png(png)


def test_errors_are_counted_by_kind(server_url, tmp_path):
    out = tmp_path / "err.json"
    proc = subprocess.run([*BENCH, "--url", server_url, "--api-key", "test-key", "--no-progress",
                           "--num-requests", "2", "--concurrency", "2", "--threshold", "7",
                           "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1  # nothing completed
    s = json.loads(out.read_text())["runs"][0]["summary"]
    assert s["errors"] == {"http_400:invalid_request_error": 2}
