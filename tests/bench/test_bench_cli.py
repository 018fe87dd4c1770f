"""`diffuserve bench <kind>`: one command family; the old spellings still run, saying they go."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from diffuserve.bench.cli import KINDS
from diffuserve.server.cli import COMMANDS, upgrade_argv

CLI = [sys.executable, "-m", "diffuserve.server.cli"]


@pytest.mark.parametrize(("old", "new"), [
    (["bench-offline", "--num-prompts", "2"], ["bench", "offline", "--num-prompts", "2"]),
    (["--log-level", "WARNING", "bench-kernels"], ["--log-level", "WARNING", "bench", "kernels"]),
    (["bench", "--url", "http://x"], ["bench", "serve", "--url", "http://x"]),
])
def test_deprecated_spellings_are_rewritten(old, new, capsys):
    assert upgrade_argv(old) == new
    assert "is deprecated" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["bench", "serve", "--url", "x"], ["bench", "--help"], ["bench"],
                                  ["serve", "--port", "1"], ["generate", "--prompt", "bench-offline"]])
def test_current_spellings_are_left_alone(argv, capsys):
    assert upgrade_argv(argv) == argv
    assert capsys.readouterr().err == ""


def test_every_kind_has_a_module_and_the_old_commands_are_gone():
    assert {"serve", "offline", "http", "kernels"} <= set(KINDS)
    assert "bench-offline" not in COMMANDS and "bench-kernels" not in COMMANDS
    for module, _summary in KINDS.values():
        assert module.startswith("diffuserve.bench.")


def test_old_command_still_runs_with_a_deprecation_line(tmp_path):
    out = tmp_path / "k.json"
    proc = subprocess.run([*CLI, "bench-kernels", "--device", "cpu", "--concurrency", "1", "--vocab", "64",
                           "--iters", "1", "--warmup", "0", "--backends", "eager", "--json", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "`bench-kernels` is deprecated" in proc.stderr and "diffuserve bench kernels" in proc.stderr
    assert [r["kind"] for r in json.loads(out.read_text())["results"]] == ["row", "select"]


def test_load_generator_does_not_import_torch():
    code = ("import sys\nfrom diffuserve.server.cli import main\n"
            "try:\n    main(['bench', 'serve', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"
