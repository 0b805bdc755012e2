"""The tiny Wan decoder (taew2_1.pth layout): streaming equals its whole decode, the file's key layout,
the encoder's shapes, and the one-line errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from streamgen.decoders.tiny_wan import load_tiny_wan
from tests.checkpoints.wan_layouts import write_taew

BLOCKS, PER_BLOCK = 4, 3


@pytest.fixture(scope="module")
def taew(tmp_path_factory):
    return write_taew(tmp_path_factory.mktemp("taew") / "taew2_1.pth", seed=5)


def test_streaming_decode_equals_whole_decode(taew):
    dec = load_tiny_wan(taew)
    latents = torch.randn(1, BLOCKS * PER_BLOCK, 16, 4, 6, generator=torch.Generator().manual_seed(0))
    state, chunks = dec.init_state(), []
    for b in range(BLOCKS):
        frames, state = dec.decode(latents[:, b * PER_BLOCK : (b + 1) * PER_BLOCK], state)
        chunks.append(frames)
    assert [c.shape[1] for c in chunks] == [4 * PER_BLOCK - 3] + [4 * PER_BLOCK] * (BLOCKS - 1)
    streamed = torch.cat(chunks, dim=1)  # [1, T, 3, 32, 48]
    whole = dec.decode_whole(latents)
    assert streamed.shape == whole.shape == (1, 4 * BLOCKS * PER_BLOCK - 3, 3, 32, 48)
    err = ((streamed - whole).abs().max() / whole.abs().max()).item()
    print(f"tiny wan streaming vs whole decode: max relative difference {err:.3g}")
    assert err <= 1e-4
    assert ((whole > 0) & (whole < 1)).float().mean() > 0.2  # the random decoder draws, not only clips
    # One frame at a time streams the same as three.
    state, singles = dec.init_state(), []
    for f in range(PER_BLOCK * 2):
        frames, state = dec.decode(latents[:, f : f + 1], state)
        singles.append(frames)
    assert torch.allclose(torch.cat(singles, 1), whole[:, : 8 * PER_BLOCK - 3], rtol=0, atol=1e-5)


def test_file_has_taehv_layout(taew):
    """Key names and shapes as madebyollin/taehv's TAEHV builds them for Wan 2.1 (nn.Sequential indices):
    encoder conv, ReLU, then 3 x (TPool, strided conv, 3 MemBlocks), conv; decoder Clamp, conv, ReLU,
    3 x (3 MemBlocks, Upsample, TGrow, conv), ReLU, conv; widths 64 / 256, 128, 64, 64; 16 latents."""
    sd = torch.load(taew, weights_only=True)
    want = {"encoder.0.weight": (64, 3, 3, 3), "encoder.0.bias": (64,), "encoder.17.weight": (16, 64, 3, 3),
            "encoder.17.bias": (16,), "decoder.1.weight": (256, 16, 3, 3), "decoder.1.bias": (256,),
            "decoder.22.weight": (3, 64, 3, 3), "decoder.22.bias": (3,)}
    for i, stride in zip((2, 7, 12), (2, 2, 1)):
        want[f"encoder.{i}.conv.weight"] = (64, 64 * stride, 1, 1)  # TPool
        want[f"encoder.{i + 1}.weight"] = (64, 64, 3, 3)  # stride-2 conv without bias
        for m in range(i + 2, i + 5):
            want |= {f"encoder.{m}.conv.0.weight": (64, 128, 3, 3), f"encoder.{m}.conv.2.weight": (64, 64, 3, 3),
                     f"encoder.{m}.conv.4.weight": (64, 64, 3, 3)}
            want |= {f"encoder.{m}.conv.{j}.bias": (64,) for j in (0, 2, 4)}
    for start, c, c_next, stride in ((3, 256, 128, 1), (9, 128, 64, 2), (15, 64, 64, 2)):
        for m in range(start, start + 3):
            want |= {f"decoder.{m}.conv.0.weight": (c, 2 * c, 3, 3), f"decoder.{m}.conv.2.weight": (c, c, 3, 3),
                     f"decoder.{m}.conv.4.weight": (c, c, 3, 3)}
            want |= {f"decoder.{m}.conv.{j}.bias": (c,) for j in (0, 2, 4)}
        want[f"decoder.{start + 4}.conv.weight"] = (c * stride, c, 1, 1)  # TGrow
        want[f"decoder.{start + 5}.weight"] = (c_next, c, 3, 3)  # conv without bias
    assert {k: tuple(v.shape) for k, v in sd.items()} == want


def test_wider_time_grow_weight_keeps_its_last_frames(taew, tmp_path):
    """A file whose first decoder stage was trained to grow time (2 x 256 channels) loads its last frame's."""
    sd = torch.load(taew, weights_only=True)
    extra = torch.randn(256, 256, 1, 1)
    sd["decoder.7.conv.weight"] = torch.cat([extra, sd["decoder.7.conv.weight"]])
    torch.save(sd, tmp_path / "wide.pth")
    a, b = load_tiny_wan(taew), load_tiny_wan(tmp_path / "wide.pth")
    assert torch.equal(a.decoder[7].conv.weight, b.decoder[7].conv.weight)


def test_encode_shapes_and_round_trip(taew):
    dec = load_tiny_wan(taew)
    clip = np.random.default_rng(1).integers(0, 256, (9, 32, 48, 3), dtype=np.uint8)  # 1 + 4k frames
    latents = dec.encode(clip)
    assert latents.shape == (1, 3, 16, 4, 6) and torch.isfinite(latents).all()
    assert dec.encode(clip[:1]).shape == (1, 1, 16, 4, 6)
    frames, _ = dec.decode(latents, dec.init_state())
    assert frames.shape == (1, 9, 3, 32, 48)
    with pytest.raises(ValueError, match=r"got torch.float32 \(9, 32, 48, 3\)"):
        dec.encode(clip.astype(np.float32))


def test_errors_are_one_line(taew, tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_tiny_wan(tmp_path / "taew2_1.pth")
    assert str(tmp_path / "taew2_1.pth") in str(err.value) and "\n" not in str(err.value)
    sd = torch.load(taew, weights_only=True)
    del sd["decoder.22.bias"]
    torch.save(sd, tmp_path / "cut.pth")
    with pytest.raises(ValueError, match=r"missing \['decoder.22.bias'\]"):
        load_tiny_wan(tmp_path / "cut.pth")
    dec = load_tiny_wan(taew)
    with pytest.raises(ValueError, match=r"latents must be \[B, F, 16, h, w\], got \(1, 2, 4, 8, 8\)"):
        dec.decode(torch.zeros(1, 2, 4, 8, 8), dec.init_state())


def test_bf16_decode_follows_fp32(taew):
    full, half = load_tiny_wan(taew), load_tiny_wan(taew, dtype=torch.bfloat16)
    assert half.decoder[1].weight.dtype == torch.bfloat16 and half.latents_std.dtype == torch.float32
    latents = torch.randn(1, 3, 16, 4, 6, generator=torch.Generator().manual_seed(9))
    a, _ = full.decode(latents, full.init_state())
    b, _ = half.decode(latents, half.init_state())
    assert b.dtype == torch.float32 and (a - b).abs().max() < 0.05  # bf16 rounding, not a different picture
