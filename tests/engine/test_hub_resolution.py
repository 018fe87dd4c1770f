"""An `org/name` model id resolves through huggingface_hub (here: its offline cache, no network)."""

from __future__ import annotations

import os
import subprocess
import sys

from checkpoint_factory import write_checkpoint


def test_hub_id_resolves_from_hf_cache(tmp_path):
    cache = tmp_path / "hub"
    repo = cache / "models--acme--tiny-illada"
    write_checkpoint(repo / "snapshots" / "0123abcd", "illada")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    code = (
        "from diffuserve.engine import load_model\n"
        "m = load_model('acme/tiny-illada', load_tokenizer=False)\n"
        "print(m.config.family, m.config.num_layers)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["illada", "2"]
