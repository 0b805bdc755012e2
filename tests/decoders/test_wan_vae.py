"""The Wan2.1 VAE as a streaming decoder: block-by-block decode against diffusers' whole decode, the
encoder against diffusers' encode, and both weight layouts (diffusers folder, Wan's original .pth)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

from streamgen.decoders.wan_vae import WanVAEDecoder, load_wan_vae
from streamgen.decoders.wan_vae_keys import original_to_diffusers
from tests.checkpoints.reference import randomise
from tests.checkpoints.wan_layouts import write_wan_vae_diffusers, write_wan_vae_original

BLOCKS, PER_BLOCK = 4, 3  # 4 blocks of 3 latent frames, as the students stream them


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def real_vae():
    """diffusers' AutoencoderKLWan at Wan2.1's real widths (base 96, z 16), every weight random."""
    with torch.device("meta"):
        vae = AutoencoderKLWan()
    vae = vae.to_empty(device="cpu")
    randomise(vae, seed=1)  # N(0, 1/fan_in) weights: a fast seeded fill of the 127M parameters
    return vae.eval()


# 2x3 latents (16x24 pixels, not square) keep the real-width decodes at ~30 s on one loaded core;
# 8x8 (64x64 pixels) is the same check at a larger size (~3 min).
@pytest.mark.parametrize("h, w", [(2, 3), pytest.param(8, 8, marks=pytest.mark.slow)])
def test_streaming_decode_equals_diffusers_whole_decode(real_vae, h, w):
    dec = WanVAEDecoder(real_vae)
    latents = torch.randn(1, BLOCKS * PER_BLOCK, 16, h, w, generator=torch.Generator().manual_seed(0))
    state, chunks = dec.init_state(), []
    for b in range(BLOCKS):
        frames, state = dec.decode(latents[:, b * PER_BLOCK : (b + 1) * PER_BLOCK], state)
        chunks.append(frames)
    # The first latent frame is one pixel frame, every later one four.
    assert [c.shape[1] for c in chunks] == [1 + 4 * (PER_BLOCK - 1)] + [4 * PER_BLOCK] * (BLOCKS - 1)
    streamed = torch.cat(chunks, dim=1)  # [1, T, 3, 8h, 8w]
    with torch.no_grad():
        z = latents * dec.latents_std.view(-1, 1, 1) + dec.latents_mean.view(-1, 1, 1)  # Wan's denormalisation
        whole = real_vae.decode(z.permute(0, 2, 1, 3, 4)).sample  # [1, 3, T, 8h, 8w] in [-1, 1]
    whole = ((whole + 1) / 2).permute(0, 2, 1, 3, 4)  # -> [1, T, 3, 8h, 8w] in [0, 1]
    assert streamed.shape == whole.shape == (1, 1 + 4 * (BLOCKS * PER_BLOCK - 1), 3, 8 * h, 8 * w)
    err = max_rel(streamed, whole)
    print(f"wan vae streaming vs whole decode, {h}x{w} latents: max relative difference {err:.3g}")
    assert err <= 1e-4
    assert whole.std() > 0.01 and ((whole > 0) & (whole < 1)).float().mean() > 0.5  # not a flat or clipped picture


def test_encode_equals_diffusers_encode_and_round_trips(real_vae):
    dec = WanVAEDecoder(real_vae)
    clip = np.random.default_rng(0).integers(0, 256, (9, 16, 24, 3), dtype=np.uint8)  # 1 + 4k frames, k = 2
    latents = dec.encode(clip)
    assert latents.shape == (1, 3, 16, 2, 3)
    with torch.no_grad():
        x = torch.from_numpy(clip).permute(3, 0, 1, 2)[None].float() / 127.5 - 1  # [T, H, W, 3] -> [1, 3, T, H, W]
        mu = real_vae.encode(x).latent_dist.mode()  # [1, 16, 3, 2, 3]
    ref = (mu.permute(0, 2, 1, 3, 4) - dec.latents_mean.view(-1, 1, 1)) / dec.latents_std.view(-1, 1, 1)
    assert max_rel(latents, ref) <= 1e-5
    assert dec.encode(clip[:1]).shape == (1, 1, 16, 2, 3)  # an image primes one latent frame
    frames, _ = dec.decode(latents, dec.init_state())
    assert frames.shape == (1, 9, 3, 16, 24)  # back to the clip's 1 + 4k frames
    with pytest.raises(ValueError, match=r"T = 1 \+ 4k.*\(8, 16, 24, 3\)"):
        dec.encode(clip[:8])


def test_state_is_explicit_and_not_mutated(tmp_path):
    dec = load_wan_vae(write_wan_vae_diffusers(tmp_path / "vae"))
    latents = torch.randn(1, 6, 16, 2, 3, generator=torch.Generator().manual_seed(2))
    _, s1 = dec.decode(latents[:, :3], dec.init_state())
    a, _ = dec.decode(latents[:, 3:], s1)
    b, _ = dec.decode(latents[:, 3:], s1)  # the same state again: a fork of the stream decodes the same
    assert torch.equal(a, b) and s1.frames == 3
    with pytest.raises(ValueError, match=r"latents must be \[B, F, 16, h, w\], got \(1, 3, 4, 2, 3\)"):
        dec.decode(latents[:, :3, :4], dec.init_state())


def test_original_pth_and_diffusers_folder_load_the_same_weights(tmp_path):
    folder = write_wan_vae_diffusers(tmp_path / "vae", seed=3)
    pth = write_wan_vae_original(tmp_path / "Wan2.1_VAE.pth", seed=3)
    a, b = load_wan_vae(folder), load_wan_vae(pth)
    sa, sb = a.vae.state_dict(), b.vae.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    latents = torch.randn(1, 3, 16, 2, 3, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.decode(latents, a.init_state())[0], b.decode(latents, b.init_state())[0])


def test_original_names_are_wans(tmp_path):
    """The written .pth carries Wan's own names: diffusers' independent converter maps it back to every
    diffusers key, and names read from Wan2.1's wan/modules/vae.py are there."""
    original = torch.load(write_wan_vae_original(tmp_path / "v.pth"), weights_only=True)
    with torch.device("meta"):
        diffusers_keys = set(AutoencoderKLWan(base_dim=8).state_dict())
    assert set(convert_wan_vae_to_diffusers(original)) == diffusers_keys
    # Wan's Sequential indices: residual = [norm, SiLU, conv, norm, SiLU, Dropout, conv]; decoder
    # upsamples = 3 residual blocks + 1 Resample per stage; head = [norm, SiLU, conv]; conv1 / conv2 quant.
    for name in ("conv1.weight", "conv2.bias", "encoder.conv1.weight", "encoder.downsamples.0.residual.0.gamma",
                 "encoder.downsamples.2.resample.1.weight", "encoder.downsamples.5.time_conv.weight",
                 "encoder.downsamples.3.shortcut.weight", "encoder.middle.1.to_qkv.weight", "encoder.head.2.bias",
                 "decoder.middle.2.residual.6.weight", "decoder.upsamples.3.time_conv.weight",
                 "decoder.upsamples.11.resample.1.weight", "decoder.upsamples.4.shortcut.weight",
                 "decoder.upsamples.14.residual.3.gamma", "decoder.head.0.gamma"):
        assert name in original, name
    assert len(original_to_diffusers(diffusers_keys)) == len(diffusers_keys) == len(original)


def test_missing_or_wrong_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Wan VAE: .*nowhere\.pth"):
        load_wan_vae(tmp_path / "nowhere.pth")
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError) as err:
        load_wan_vae(tmp_path / "vae")
    assert "diffusion_pytorch_model.safetensors" in str(err.value) and "\n" not in str(err.value)
    bad = tmp_path / "bad.pth"
    sd = torch.load(write_wan_vae_original(tmp_path / "ok.pth"), weights_only=True)
    sd["decoder.extra.weight"] = torch.zeros(1)
    del sd["decoder.head.2.bias"]
    torch.save(sd, bad)
    with pytest.raises(ValueError, match=r"missing \['decoder.head.2.bias'\], unexpected \['decoder.extra.weight'\]"):
        load_wan_vae(bad)


def test_bf16_decode_follows_fp32(tmp_path):
    folder = write_wan_vae_diffusers(tmp_path / "vae", seed=6)
    full, half = load_wan_vae(folder), load_wan_vae(folder, dtype=torch.bfloat16)
    assert half.vae.decoder.conv_in.weight.dtype == torch.bfloat16
    latents = torch.randn(1, 3, 16, 2, 3, generator=torch.Generator().manual_seed(8))
    a, _ = full.decode(latents, full.init_state())
    b, _ = half.decode(latents, half.init_state())
    assert b.dtype == torch.float32 and (a - b).abs().max() < 0.05  # bf16 rounding, not a different picture
