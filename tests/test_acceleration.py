"""streamgen.acceleration: bf16 / int8 / compiled block steps, applied from outside the model code."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from streamgen.acceleration import Bf16Linear, accelerate
from streamgen.pipeline import load_pipeline
from tests.cli.helpers import run_cli


def _frames(pipe, blocks: int = 5) -> np.ndarray:
    session = pipe.start(seed=3)
    with torch.inference_mode():
        return np.concatenate([np.asarray(session.step().video, dtype=np.float64) for _ in range(blocks)])


def _psnr(ref: np.ndarray, out: np.ndarray) -> float:
    mse = float(np.mean((ref - out) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _linear_types(pipe) -> set[type]:
    return {type(m) for blk in pipe.model.blocks for m in blk.modules() if type(m).__name__.endswith("Linear")}


@pytest.mark.parametrize("settings, kind", [({"matmul_dtype": "bfloat16"}, Bf16Linear),
                                             ({"quantize": "int8"}, torch.ao.nn.quantized.dynamic.Linear)])
def test_fast_settings_swap_the_block_linears_and_stay_close_to_fp32(settings, kind):
    ref = _frames(load_pipeline("tiny", device="cpu"))
    pipe = load_pipeline("tiny", device="cpu", **settings)
    assert _linear_types(pipe) == {kind}  # every linear of every block, nothing left in fp32
    # What stays fp32: the time embedding, the head and the decoder.
    assert pipe.model.time_embedding[0].weight.dtype == torch.float32
    assert pipe.model.head.head.weight.dtype == torch.float32
    out = _frames(pipe)
    assert not np.array_equal(out, ref)  # the setting really changed the arithmetic
    assert _psnr(ref, out) > 40.0


def test_bf16_linear_keeps_weight_names_and_fp32_io():
    lin = nn.Linear(8, 4)
    fast = Bf16Linear(lin)
    assert set(dict(fast.named_parameters())) == {"weight", "bias"} and fast.weight.dtype == torch.bfloat16
    x = torch.randn(3, 8)
    y = fast(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, lin(x), atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("kwargs, needle", [({"dtype": "float16"}, "'float16'"), ({"quantize": "int4"}, "'int4'"),
                                            ({"dtype": "bfloat16", "quantize": "int8"}, "exclude")])
def test_bad_settings_are_one_line_naming_the_value(kwargs, needle):
    pipe = load_pipeline("tiny", device="cpu")
    with pytest.raises(ValueError) as err:
        accelerate(pipe, **kwargs)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert pipe.acceleration is None and _linear_types(pipe) == {nn.Linear}  # nothing half-applied


def test_a_pipeline_is_accelerated_once():
    pipe = load_pipeline("tiny", device="cpu", quantize="int8")
    with pytest.raises(ValueError, match="already accelerated"):
        accelerate(pipe, dtype="bfloat16")


def test_bench_cli_reports_its_speed_settings():
    proc = run_cli("bench", "--model", "tiny", "--device", "cpu", "--blocks", "3", "--warmup", "1", "--quiet",
                   "--quantize", "int8", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["acceleration"] == {"matmul_dtype": "model", "compile": False, "quantize": "int8", "feature_cache": None}
    assert result["frames_per_second"] > 0


@pytest.mark.slow  # inductor's C++ compilation takes about a minute on the 2-core CPU
@pytest.mark.parametrize("settings", [{}, {"quantize": "int8"}])
def test_compiled_block_step_never_recompiles_as_the_cache_rolls(settings):
    import torch._dynamo

    torch._dynamo.reset()
    ref = _frames(load_pipeline("tiny", device="cpu", **settings), blocks=8)
    pipe = load_pipeline("tiny", device="cpu", compile=True, **settings)
    session = pipe.start(seed=3)
    frames = []
    with torch.inference_mode():
        for _ in range(4):  # warm-up: the window (6 latent frames = 3 blocks) fills, each length compiles once
            frames.append(np.asarray(session.step().video, dtype=np.float64))
        before = dict(torch._dynamo.utils.counters["stats"])
        with torch._dynamo.config.patch(error_on_recompile=True):
            for _ in range(4):  # rolling steps: the cache wraps around; any recompile raises
                frames.append(np.asarray(session.step().video, dtype=np.float64))
        after = dict(torch._dynamo.utils.counters["stats"])
    assert after.get("unique_graphs", 0) == before.get("unique_graphs", 0)
    assert before.get("unique_graphs", 0) > 0  # the blocks really went through the compiler
    assert _psnr(ref, np.concatenate(frames)) > 40.0
