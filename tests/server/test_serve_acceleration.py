"""`streamgen serve --quantize int8 --feature-cache ...`: the flags reach the served pipeline, a real
WebSocket session streams from it, and ``/v1/models`` says how the model runs."""
from __future__ import annotations

import asyncio

import pytest
import torch
from pydantic import ValidationError

from streamgen.server.cli import build_parser, settings_from_args

from .conftest import running_server
from .ws_client import WsClient


def test_serve_flags_become_settings():
    args = build_parser().parse_args(["--model", "tiny", "--quantize", "int8", "--feature-cache", "reuse@1"])
    settings = settings_from_args(args)
    assert settings.quantize == "int8" and settings.feature_cache == "reuse@1"
    with pytest.raises(ValidationError, match="'bogus'"):
        type(settings)(feature_cache="bogus")
    with pytest.raises(ValidationError, match="'int4'"):
        type(settings)(quantize="int4")


def test_quantized_feature_cached_model_streams_over_websocket():
    with running_server(model="tiny", device="cpu", quantize="int8", feature_cache="reuse@1", max_sessions=2) as server:
        runtime = server.get_json("/v1/models")["runtime"]["tiny"]
        pipe = server.state.engine.pipelines["tiny"]

        async def run():
            async with WsClient(server.url) as c:
                started = await c.start("tiny", seed=1)
                assert started["type"] == "started", started
                await c.wait_for(lambda: len(c.media) >= 6, timeout=20, what="6 frames")
                return len(c.media), c.errors()

        frames, errors = asyncio.run(run())
    assert frames >= 6 and not errors
    acc = runtime["acceleration"]
    assert acc["quantize"] == "int8"
    assert acc["feature_cache"] == {"mode": "reuse", "layer": 1, "reuse_steps": [1, 3]}
    # The served blocks are int8 linears, and the session's blocks reused the deep layers on some steps.
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in pipe.model.blocks.modules())
    assert pipe.feature_cache.reused > 0
