"""Engine and model flags come from the config dataclasses: every command's flag defaults equal
the fields' defaults, and the help shows them (issue: `serve --help` once said 1 GiB of CPU KV
cache while the engine used 256 MiB; bench-offline batched 16,384 tokens against 8,192)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib

import pytest
from diffuserve.engine.cli_args import engine_argv, engine_config_from_args, format_bytes
from diffuserve.engine.engine_config import EngineConfig
from diffuserve.engine.model_config import ModelOverrides

# Commands that declare engine flags, and the fields each sets itself (no flag).
COMMANDS = {
    "diffuserve.server.serve_cmd": (),
    "diffuserve.engine.generate_cmd": (),
    "diffuserve.bench.offline": ("max_num_seqs",),
    "diffuserve.bench.http": ("max_num_seqs",),
}


def parser_of(module: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    importlib.import_module(module).add_arguments(parser)
    return parser


@pytest.mark.parametrize("module", sorted(COMMANDS))
def test_every_flag_default_is_its_field_default(module):
    parser = parser_of(module)
    actions = {a.dest: a for a in parser._actions}
    with_model_flags = module.endswith(("serve_cmd", "generate_cmd"))
    model_fields = dataclasses.fields(ModelOverrides) if with_model_flags else ()
    checked = 0
    for f in [*dataclasses.fields(EngineConfig), *model_fields]:
        if f.name in COMMANDS[module]:
            assert f.name not in actions, f"{module} sets {f.name} itself and must not declare its flag"
            continue
        action = actions[f.name]
        assert action.default == f.default, (module, f.name)
        assert action.option_strings[0] == "--" + f.name.replace("_", "-")
        if f.default is not None and not isinstance(f.default, tuple):
            shown = format_bytes(f.default) if f.metadata.get("bytes") else str(f.default)
            assert f"(default: {shown})" in action.help, (module, f.name, action.help)
        checked += 1
    assert checked >= len(dataclasses.fields(EngineConfig)) - len(COMMANDS[module])


def test_cpu_kv_cache_help_says_the_engine_default():
    help_text = parser_of("diffuserve.server.serve_cmd").format_help()
    assert "256 MiB" in help_text and "1 GiB" not in help_text
    assert EngineConfig().cpu_kv_cache_memory == 256 << 20


def test_flags_parse_into_the_config_and_back():
    parser = parser_of("diffuserve.server.serve_cmd")
    args = parser.parse_args(["--kv-cache-memory", "512MiB", "--page-size", "8", "--max-num-seqs", "4",
                              "--stop-token-ids", "", "--attention-backend", "torch"])
    config = engine_config_from_args(args)
    assert config == EngineConfig(kv_cache_memory=512 << 20, kv_page_size=8, max_num_seqs=4,
                                  attention_backend="torch")
    assert args.stop_token_ids == ()  # an empty list: no stop ids, not "keep the model's"
    # The argv another process (a benchmark's server) gets rebuilds the same config.
    again = engine_config_from_args(parser.parse_args(engine_argv(config)))
    assert again == config
    assert engine_argv(EngineConfig()) == []


def test_bad_engine_value_is_named():
    args = parser_of("diffuserve.engine.generate_cmd").parse_args(["--prompt", "x", "--max-num-seqs", "0"])
    with pytest.raises(ValueError, match="max_num_seqs must be >= 1"):
        engine_config_from_args(args)
