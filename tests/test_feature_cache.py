"""streamgen.feature_cache: reuse steps skip the deep layers, off changes nothing, a zero predictor is plain
reuse, and the predictor's training loss falls on a tiny rollout."""
from __future__ import annotations

import json

import pytest
import torch

from streamgen.feature_cache import new_predictors, save_predictors
from streamgen.feature_cache_spec import FeatureCacheSpec, parse_feature_cache
from streamgen.pipeline import load_pipeline
from streamgen.training.evaluate_cli import build_parser as evaluate_parser
from streamgen.training.feature_cache import collect_world, fit, recording
from tests.cli.helpers import run_cli


def _latents(pipe, blocks: int = 3) -> list[torch.Tensor]:
    """The clean latents of each generated block (video, and audio for joint models), seed 3."""
    session = pipe.start(seed=3)
    out: list[torch.Tensor] = []
    emit = session.emit

    def keep(x0, a0=None, **kw):  # the latents step() hands to the decoders
        out.extend(x for x in (x0, a0) if x is not None)
        return emit(x0, a0, **kw)

    session.emit = keep
    for _ in range(blocks):
        session.step()
    session.close()
    return out


def _old_run_blocks(model, x, t, text_kv, ctx, actions=None, cond=None):
    """The video model's block loop as it was before the layer_stack seam: every block in order."""
    h = model.embed_video(x, cond)
    e, e0 = model.embed_time(t)
    for i, blk in enumerate(model.blocks):
        h = blk(h, e0, text_kv[i], ctx, i, actions)
    return model.unpatchify(model.head(h, e))


def test_feature_cache_off_is_the_old_output_exactly():
    plain = load_pipeline("tiny", device="cpu")
    ref = _latents(plain)
    # The same stream through the pre-seam loop (a model-instance override of run_blocks).
    old = load_pipeline("tiny", device="cpu")
    old.model.run_blocks = lambda *a, **k: _old_run_blocks(old.model, *a, **k)
    assert all(torch.equal(a, b) for a, b in zip(ref, _latents(old)))
    # A cache installed but reusing no step: bitwise the plain stream, every forward in full.
    idle = load_pipeline("tiny", device="cpu", feature_cache=FeatureCacheSpec(mode="reuse", layer=1, reuse_steps=()))
    assert all(torch.equal(a, b) for a, b in zip(ref, _latents(idle)))
    assert idle.feature_cache.reused == 0 and idle.feature_cache.full > 0


@pytest.mark.parametrize("model", ["tiny", "tiny-av"])
def test_reuse_steps_skip_the_deep_layers(model):
    pipe = load_pipeline(model, device="cpu", feature_cache="reuse@1")
    cfg, steps = pipe.config, len(pipe.timesteps)
    assert cfg.num_layers == 2 and steps == 4  # layer 1 is the deep half; steps 1 and 3 reuse
    calls = [0] * cfg.num_layers
    for i, blk in enumerate(pipe.model.blocks):  # `finish` runs once per layer and forward, video-only or joint
        def counted(*a, _i=i, _f=blk.finish, **k):
            calls[_i] += 1
            return _f(*a, **k)
        blk.finish = counted
    blocks = 3
    ref = _latents(load_pipeline(model, device="cpu"), blocks)
    out = _latents(pipe, blocks)
    forwards = blocks * (steps + 1)  # the steps and the refill
    assert calls[0] == forwards
    assert calls[1] == forwards - 2 * blocks  # steps 1 and 3 of every block skipped layer 1
    assert pipe.feature_cache.reused == 2 * blocks and pipe.feature_cache.held() == 0  # nothing kept after a refill
    assert pipe.acceleration.describe()["feature_cache"] == {"mode": "reuse", "layer": 1, "reuse_steps": [1, 3]}
    # An approximation, not a different stream: close to the full model, not equal to it.
    for a, b in zip(ref, out):
        assert not torch.equal(a, b)
        assert float((a - b).pow(2).mean() / a.pow(2).mean()) < 0.1


def test_the_kv_cache_after_a_reuse_block_holds_the_full_models_kv():
    """A skipped layer writes no K / V on a reuse step; the refill runs every layer, so after the block
    the cache holds exactly what the full model writes for the clean block (context_noise 0 here)."""
    pipe = load_pipeline("tiny", device="cpu", feature_cache="reuse@1")
    session = pipe.start(seed=3)
    blocks = []
    emit = session.emit
    session.emit = lambda x0, a0=None, **kw: (blocks.append(x0), emit(x0, a0, **kw))[1]
    for _ in range(2):
        session.step()
    assert pipe.feature_cache.reused == 4
    k, v = session.cache.k.clone(), session.cache.v.clone()
    start = session.next_frame - pipe.config.frames_per_block
    model = pipe.model
    with torch.inference_mode():  # the last block's refill again, by the class's own (uncached) forward
        t = torch.full((1, blocks[-1].shape[1]), pipe.config.context_noise)
        type(model).forward_cached(model, blocks[-1], t, session.text_kv, session.cache, start)
    assert torch.equal(k, session.cache.k) and torch.equal(v, session.cache.v)


def test_a_zero_predictor_is_plain_reuse(tmp_path):
    pipe = load_pipeline("tiny-av", device="cpu")
    path = tmp_path / "zero.safetensors"
    save_predictors(path, new_predictors(pipe.config), layer=1, reuse_steps=(1, 3), hidden=pipe.config.dim)
    learned = load_pipeline("tiny-av", device="cpu", feature_cache=FeatureCacheSpec(mode="learned", predictor=str(path)))
    plain = load_pipeline("tiny-av", device="cpu", feature_cache="reuse@1")
    assert learned.feature_cache.layer == 1 and learned.feature_cache.predictors is not None
    assert all(torch.equal(a, b) for a, b in zip(_latents(plain), _latents(learned)))
    assert learned.feature_cache.reused == plain.feature_cache.reused > 0


def test_predictor_training_loss_falls_on_a_tiny_rollout():
    pipe = load_pipeline("tiny-av", device="cpu")
    cache, records = recording(pipe, layer=1)
    with torch.inference_mode():
        collect_world(pipe, None, rollouts=2, blocks=4, seed=0)
    assert cache.reused == 0  # recording runs every step in full
    train = records.only((1, 3))
    assert len(train) == 2 * 4 * 2 and len(train.shallow[0]) == 2  # rollouts x blocks x reuse steps; video + audio
    torch.manual_seed(0)
    predictors = new_predictors(pipe.config)
    log = fit(predictors, train, steps=60, log_every=60)
    assert log[0]["train"] == [1.0, 1.0]  # zero predictor: exactly plain reuse's error
    assert max(log[-1]["train"]) < 0.9


def test_bad_feature_cache_settings_are_one_line():
    with pytest.raises(ValueError, match="'bogus'"):
        parse_feature_cache("bogus")
    with pytest.raises(ValueError, match="'reuse@x'"):
        parse_feature_cache("reuse@x")
    assert parse_feature_cache("learned@2:p.safetensors") == FeatureCacheSpec(mode="learned", layer=2, predictor="p.safetensors")
    with pytest.raises(ValueError, match="'p.safetensors' given for mode 'reuse'"):
        parse_feature_cache("reuse:p.safetensors")
    with pytest.raises(ValueError, match="layer 5"):
        load_pipeline("tiny", device="cpu", feature_cache="reuse@5")
    with pytest.raises(ValueError, match="step 0"):
        FeatureCacheSpec(reuse_steps=(0, 1))
    with pytest.raises(ValueError, match="learned"):
        load_pipeline("tiny", device="cpu", feature_cache="learned")  # a preset ships no predictor


def test_speed_flags_on_bench_and_evaluate():
    proc = run_cli("bench", "--model", "tiny", "--device", "cpu", "--blocks", "2", "--warmup", "0", "--quiet",
                   "--feature-cache", "reuse@1", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    acc = json.loads(proc.stdout)["acceleration"]
    assert acc["feature_cache"] == {"mode": "reuse", "layer": 1, "reuse_steps": [1, 3]} and acc["quantize"] is None
    a = evaluate_parser().parse_args(["--quantize", "int8", "--feature-cache", "learned", "--compile", "--dtype", "float32"])
    assert (a.quantize, a.feature_cache, a.compile, a.dtype) == ("int8", "learned", True, "float32")
    bad = run_cli("generate", "--model", "tiny", "--feature-cache", "sometimes")
    assert bad.returncode == 2 and "'sometimes'" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_the_shipped_world_predictor_beats_plain_reuse():
    """The predictor beside the world's weights loads by default and keeps the stream closer to the full
    model than plain reuse does (the same seed, start and steps)."""
    learned = load_pipeline("world", device="cpu", feature_cache="learned")
    assert (learned.feature_cache.layer, learned.feature_cache.reuse_steps) == (1, (1,))
    ref = _latents(load_pipeline("world", device="cpu"), blocks=4)
    plain = _latents(load_pipeline("world", device="cpu", feature_cache="reuse@1"), blocks=4)
    out = _latents(learned, blocks=4)

    def err(xs):
        return sum(float((a - b).pow(2).mean()) for a, b in zip(ref, xs))
    assert learned.feature_cache.reused == 4
    assert 0 < err(out) < err(plain)
