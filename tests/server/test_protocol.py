"""Protocol models and error mapping, without an engine (the real-server tests cover the wiring)."""

from __future__ import annotations

import pytest
from diffuserve.engine.params import ParamError
from diffuserve.server.errors import APIError, validation_error
from diffuserve.server.openai.protocol import ChatCompletionRequest, CompletionRequest, unsupported_fields
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

MSG = [{"role": "user", "content": "hi"}]


def chat(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest(messages=MSG, **fields)


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logit_bias": {"5": 1.0}}, "logit_bias"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": -1.0}, "frequency_penalty"),
        ({"top_p": 0.9}, "top_p"),
        ({"top_k": 40}, "top_k"),
        ({"best_of": 3}, "best_of"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),  # without stream=true
    ],
)
def test_unsupported_fields_are_named(fields, param):
    bad = unsupported_fields(chat(**fields))
    assert bad is not None and bad[0] == param and param in bad[1]


def test_neutral_values_of_refused_fields_are_accepted():
    req = chat(top_p=1.0, presence_penalty=0.0, frequency_penalty=0, logprobs=False, tool_choice="none",
               response_format={"type": "text"}, logit_bias={}, best_of=1, top_k=-1, user="u")
    assert unsupported_fields(req) is None


def test_completion_echo_and_suffix_refused():
    assert unsupported_fields(CompletionRequest(prompt="a", echo=True))[0] == "echo"
    assert unsupported_fields(CompletionRequest(prompt="a", suffix="z"))[0] == "suffix"
    assert unsupported_fields(CompletionRequest(prompt="a", logprobs=2))[0] == "logprobs"
    assert unsupported_fields(CompletionRequest(prompt=[[1, 2], [3]])) is None


def test_unknown_fields_are_kept_aside_not_refused():
    req = chat(some_new_openai_field=1)
    assert req.model_extra == {"some_new_openai_field": 1}
    assert unsupported_fields(req) is None


def _validation_api_error(model, body) -> APIError:
    try:
        model.model_validate(body)
    except ValidationError as e:
        errs = [dict(err, loc=("body", *err["loc"])) for err in e.errors()]
        return validation_error(RequestValidationError(errs))
    raise AssertionError("expected a validation error")


@pytest.mark.parametrize(
    "body, param",
    [
        ({"messages": MSG, "block_length": 0}, "block_length"),
        ({"messages": MSG, "threshold": 1.5}, "threshold"),
        ({"messages": MSG, "remasking": "sometimes"}, "remasking"),
        ({"messages": MSG, "cache": "disk"}, "cache"),
        ({"messages": MSG, "cache_refresh": -1}, "cache_refresh"),
        ({"messages": MSG, "cache_refresh": "sometimes"}, "cache_refresh"),
        ({"messages": MSG, "canvas": "round"}, "canvas"),
        ({"messages": MSG, "cfg_scale": -1}, "cfg_scale"),
        ({"messages": MSG, "think_power": 0}, "think_power"),
        ({"messages": MSG, "n": 0}, "n"),
        ({"messages": MSG, "seed": -3}, "seed"),
        ({"messages": MSG, "max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": []}, "messages"),
    ],
)
def test_pydantic_errors_name_the_field(body, param):
    err = _validation_api_error(ChatCompletionRequest, body)
    assert err.status == 400 and err.param == param and param in err.message
    assert set(err.body()["error"]) == {"message", "type", "param", "code"}


def test_missing_field_code():
    err = _validation_api_error(ChatCompletionRequest, {"model": "m"})
    assert (err.param, err.code) == ("messages", "missing_required_parameter")


def test_param_error_maps_to_400_with_code():
    e = APIError.from_param_error(ParamError("max_tokens", "too long", code="context_length_exceeded"))
    assert e.status == 400
    assert e.body() == {"error": {"message": "too long", "type": "invalid_request_error",
                                  "param": "max_tokens", "code": "context_length_exceeded"}}


def test_union_errors_name_the_field_not_the_branch():
    err = _validation_api_error(CompletionRequest, {"prompt": "x", "stop": 5})
    assert err.param == "stop"
    err = _validation_api_error(CompletionRequest, {"prompt": [1, "a"]})
    assert err.param.startswith("prompt")


def test_server_default_cache_refresh_applies_only_when_the_request_leaves_it_out():
    """`serve --cache-refresh N` fills requests without the field; an explicit value wins."""
    from diffuserve.engine.async_engine import AsyncEngine
    from diffuserve.server.metrics import ServerMetrics
    from diffuserve.server.openai.serving import OpenAIServing
    from diffuserve.server.state import ServerSettings, ServerState

    state = ServerState(lambda: None)
    state.engine = AsyncEngine.from_pretrained(None)  # the built-in model; the loop is never started

    def params(default, **fields):
        settings = ServerSettings(served_model_name="m", default_cache_refresh=default)
        serving = OpenAIServing(state, settings, ServerMetrics("m", lambda: None))
        return serving.make_params(chat(**fields), 8, 8, prompt_len=4)

    assert params(None).cache_refresh == "auto"  # the engine's default
    assert params(0).cache_refresh == 0
    assert params(3).cache_refresh == 3
    assert params(0, cache_refresh=2).cache_refresh == 2
    assert params(0, cache_refresh="auto").cache_refresh == "auto"


def test_serve_cache_refresh_flag():
    from diffuserve.server.serve_cmd import cache_refresh_default

    assert cache_refresh_default(None) is None
    assert cache_refresh_default("auto") == "auto"
    assert cache_refresh_default("2") == 2
    for bad in ("-1", "often"):
        with pytest.raises(SystemExit, match="--cache-refresh"):
            cache_refresh_default(bad)


def test_served_threshold_fills_only_requests_without_a_rule():
    """`serve --threshold T` (engine/params.py with_served_rule): requests choosing no rule of their
    own get T; threshold / threshold_factor / steps / exact mode keep theirs; 'none' disables it."""
    from diffuserve.engine.params import parse_threshold, with_served_rule

    assert with_served_rule({}, 0.9) == {"threshold": 0.9}
    assert with_served_rule({"cache_refresh": 2}, 0.8) == {"cache_refresh": 2, "threshold": 0.8}
    for own in ({"threshold": 0.5}, {"threshold_factor": 1.0}, {"steps": 32}, {"cache": "none"}):
        assert with_served_rule(own, 0.9) == own
    assert with_served_rule({"cache": "dual", "canvas": "fixed"}, 0.9)["threshold"] == 0.9
    assert with_served_rule({}, None) == {}
    assert parse_threshold("none") is None and parse_threshold("0.7") == 0.7
    for bad in ("0", "1.5", "x"):
        with pytest.raises(ValueError):
            parse_threshold(bad)


@pytest.mark.parametrize("bad", ["2", "0", "abc"])
def test_serve_refuses_a_bad_threshold_flag_with_its_range(bad):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "diffuserve.server.cli", "serve", "--threshold", bad],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert f"argument --threshold: threshold must be in (0, 1] or 'none', got '{bad}'" in out.stderr
