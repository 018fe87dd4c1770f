"""Each family loads from files in its real format and computes what an independent forward computes."""

from __future__ import annotations

import json
import math

import pytest
import torch
from checkpoint_factory import HEADS, KV_HEADS, family_config, family_tensors, write_checkpoint
from diffuserve.engine import CheckpointError, load_model


def _independent_logits(family: str, t: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """A direct transcription of the published architectures, one sequence, float64, explicit loops."""
    cfg = family_config(family)
    theta = cfg["rope_theta"]
    heads = HEADS
    kv_heads = HEADS if family == "llada" else KV_HEADS
    if family == "llada":
        p = "model.transformer"
        emb, final_norm, head = t[f"{p}.wte.weight"], t[f"{p}.ln_f.weight"], t[f"{p}.ff_out.weight"]
        names = {k: f"{p}.blocks.{{i}}.{v}.weight" for k, v in dict(
            n1="attn_norm", q="q_proj", k="k_proj", v="v_proj", o="attn_out", n2="ff_norm",
            gate="ff_proj", up="up_proj", down="ff_out").items()}
        eps = 1e-5
    else:
        emb, final_norm = t["model.embed_tokens.weight"], t["model.norm.weight"]
        head = t.get("lm_head.weight", emb)
        names = {k: f"model.layers.{{i}}.{v}.weight" for k, v in dict(
            n1="input_layernorm", q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj",
            o="self_attn.o_proj", n2="post_attention_layernorm", gate="mlp.gate_proj", up="mlp.up_proj",
            down="mlp.down_proj").items()}
        eps = 1e-6

    def w(key: str, i: int) -> torch.Tensor:
        return t[names[key].format(i=i)].double()

    def rms(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * g.double()

    x = emb.double()[ids]  # (T, d)
    seq = x.shape[0]
    hd = x.shape[1] // heads
    for i in range(cfg.get("n_layers", cfg.get("num_hidden_layers"))):
        h = rms(x, w("n1", i))
        q, k, v = h @ w("q", i).T, h @ w("k", i).T, h @ w("v", i).T
        if family == "dream":
            for name, tensor in (("q", q), ("k", k), ("v", v)):
                tensor += t[f"model.layers.{i}.self_attn.{name}_proj.bias"].double()
        out = torch.zeros(seq, heads * hd, dtype=torch.float64)
        for head_i in range(heads):
            kv_i = head_i // (heads // kv_heads)
            qh, kh = q[:, head_i * hd:(head_i + 1) * hd], k[:, kv_i * hd:(kv_i + 1) * hd]
            vh = v[:, kv_i * hd:(kv_i + 1) * hd]
            rot = []
            for mat in (qh, kh):
                r = torch.empty_like(mat)
                for pos in range(seq):
                    for j in range(hd // 2):
                        ang = pos / theta ** (2 * j / hd)
                        a, b = mat[pos, j], mat[pos, j + hd // 2]
                        r[pos, j] = a * math.cos(ang) - b * math.sin(ang)
                        r[pos, j + hd // 2] = b * math.cos(ang) + a * math.sin(ang)
                rot.append(r)
            scores = rot[0] @ rot[1].T / math.sqrt(hd)  # no causal mask: every token sees all
            out[:, head_i * hd:(head_i + 1) * hd] = torch.softmax(scores, -1) @ vh
        x = x + out @ w("o", i).T
        h = rms(x, w("n2", i))
        gate = h @ w("gate", i).T
        x = x + ((gate * torch.sigmoid(gate)) * (h @ w("up", i).T)) @ w("down", i).T
    return rms(x, final_norm) @ head.double().T


@pytest.mark.parametrize("family,shards", [("llada", 1), ("illada", 3), ("dream", 2)])
def test_family_loads_and_matches_independent_forward(tmp_path, family, shards):
    tensors = write_checkpoint(tmp_path / family, family, shards=shards)
    model, tok, cfg = load_model(tmp_path / family, load_tokenizer=False)
    assert tok is None and cfg.family == family
    ids = torch.tensor([3, 17, 42, 5, 88, 23, 61])
    got = model(ids[None])[0]
    want = _independent_logits(family, tensors, ids)
    if family == "dream":
        # Dream predicts token i at position i-1: the loader undoes the shift.
        assert torch.allclose(got[1:].double(), want[:-1], atol=1e-4)
        assert not torch.allclose(got[1:].double(), want[1:], atol=1e-2)
    else:
        assert (got.double() - want).abs().max() < 1e-4


def test_family_facts_from_config(tmp_path):
    write_checkpoint(tmp_path / "l", "llada")
    write_checkpoint(tmp_path / "i", "illada")
    write_checkpoint(tmp_path / "d", "dream")
    llada = load_model(tmp_path / "l", load_tokenizer=False).config
    illada = load_model(tmp_path / "i", load_tokenizer=False).config
    dream = load_model(tmp_path / "d", load_tokenizer=False).config
    assert llada.stop_token_ids[:2] == (126081, 126348) and llada.mask_token_id == 96
    assert illada.mask_token_id == 5 and illada.tie_embeddings and illada.num_kv_heads == KV_HEADS
    assert dream.shift_logits and dream.qkv_bias and dream.mask_token_id == 95 and 94 in dream.stop_token_ids


def test_overrides(tmp_path):
    write_checkpoint(tmp_path / "i", "illada")
    cfg = load_model(tmp_path / "i", load_tokenizer=False, mask_token_id=7, stop_token_ids=[1, 2],
                     think_end_text="</reason>").config
    assert (cfg.mask_token_id, cfg.stop_token_ids, cfg.think_end_text) == (7, (1, 2), "</reason>")
    with pytest.raises(CheckpointError, match="mask_token_id=500"):
        load_model(tmp_path / "i", load_tokenizer=False, mask_token_id=500)


def test_bfloat16_load(tmp_path):
    write_checkpoint(tmp_path / "i", "illada")
    model = load_model(tmp_path / "i", dtype="bfloat16", load_tokenizer=False).model
    assert model.embed.weight.dtype == torch.bfloat16
    assert model(torch.tensor([[1, 2, 3]])).shape == (1, 3, 97)


def test_unknown_model_type_lists_supported(tmp_path):
    write_checkpoint(tmp_path / "x", "illada", config={**family_config("illada"), "model_type": "gpt2"})
    with pytest.raises(CheckpointError, match=r"unknown model_type 'gpt2'.*dream.*illada.*llada"):
        load_model(tmp_path / "x", load_tokenizer=False)


def test_missing_tensor_named(tmp_path):
    t = family_tensors("illada")
    del t["model.layers.1.mlp.up_proj.weight"]
    write_checkpoint(tmp_path / "x", "illada", tensors=t)
    with pytest.raises(CheckpointError, match=r"missing tensors: \['model.layers.1.mlp.up_proj.weight'\]"):
        load_model(tmp_path / "x", load_tokenizer=False)


def test_unexpected_tensor_named(tmp_path):
    t = {**family_tensors("illada"), "model.layers.0.extra.weight": torch.ones(3)}
    write_checkpoint(tmp_path / "x", "illada", tensors=t)
    with pytest.raises(CheckpointError, match="unexpected tensors: .*model.layers.0.extra.weight"):
        load_model(tmp_path / "x", load_tokenizer=False)


def test_shape_mismatch_named(tmp_path):
    t = family_tensors("illada")
    t["model.norm.weight"] = torch.ones(31)
    write_checkpoint(tmp_path / "x", "illada", tensors=t)
    with pytest.raises(CheckpointError, match=r"'model.norm.weight' has shape \(31,\).*\(32,\)"):
        load_model(tmp_path / "x", load_tokenizer=False)


def test_pickled_weights_refused(tmp_path):
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(family_config("illada")))
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="pickled weights are never loaded"):
        load_model(folder, load_tokenizer=False)


def test_not_a_folder(tmp_path):
    with pytest.raises(CheckpointError, match="is not a folder"):
        load_model(tmp_path / "absent", load_tokenizer=False)


@pytest.mark.parametrize("family", ["llada", "illada", "dream"])
def test_fused_projections_export_back_to_checkpoint_tensors(tmp_path, family):
    """q/k/v and gate/up load into one parameter each; export splits them into the same tensors."""
    from diffuserve.engine.models.weight_maps import checkpoint_tensors
    from safetensors.torch import load_file, save_file

    tensors = write_checkpoint(tmp_path / "src", family)
    model = load_model(tmp_path / "src", load_tokenizer=False).model
    names = {n for n, _ in model.named_parameters()}
    assert "layers.0.qkv_proj.weight" in names and "layers.1.gate_up_proj.weight" in names
    assert not any(n.endswith((".q_proj.weight", ".gate_proj.weight", ".up_proj.weight")) for n in names)
    exported = checkpoint_tensors(model.cfg, dict(model.named_parameters()))
    assert sorted(exported) == sorted(tensors)
    for name, tensor in tensors.items():
        assert torch.equal(exported[name], tensor), name
    # What an exporter writes loads back into the same model.
    out = tmp_path / "out"
    out.mkdir()
    save_file({n: t.contiguous() for n, t in exported.items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(family_config(family)))
    again = load_model(out, load_tokenizer=False).model
    for (n, a), (_, b) in zip(model.named_parameters(), again.named_parameters(), strict=True):
        assert torch.equal(a, b), n
    assert load_file(str(out / "model.safetensors")).keys() == tensors.keys()


def test_fused_name_has_no_single_checkpoint_name():
    from diffuserve.engine.model_config import ModelConfig
    from diffuserve.engine.models.weight_maps import checkpoint_names

    cfg = ModelConfig.from_hf(family_config("illada"))
    assert checkpoint_names(cfg, ["layers.0.q_proj.weight"]) == {
        "layers.0.q_proj.weight": "model.layers.0.self_attn.q_proj.weight"}
    with pytest.raises(ValueError, match="checkpoint_tensors"):
        checkpoint_names(cfg, ["layers.0.qkv_proj.weight"])


def test_part_of_fused_projection_with_wrong_shape_named(tmp_path):
    t = family_tensors("illada")
    t["model.layers.0.self_attn.k_proj.weight"] = torch.ones(HEADS * 8, 32)  # MHA-sized, config says GQA
    write_checkpoint(tmp_path / "x", "illada", tensors=t)
    with pytest.raises(CheckpointError, match=r"'model.layers.0.self_attn.k_proj.weight' has shape \(32, 32\)"
                       r".*\(16, 32\)"):
        load_model(tmp_path / "x", load_tokenizer=False)
