"""Names of the Wan2.1 VAE's weights in Wan's original ``Wan2.1_VAE.pth`` and in diffusers' ``AutoencoderKLWan``.

The original (``wan/modules/vae.py``) keeps flat ``nn.Sequential`` lists: ``encoder.downsamples.N``,
``decoder.upsamples.N``, ``{encoder,decoder}.middle.{0,1,2}`` and ``head.{0,2}``; a residual block's
layers are ``residual.{0,2,3,6}`` (norm, conv, norm, conv) plus ``shortcut``; the quant convs are
``conv1`` / ``conv2``. diffusers names the same modules (``down_blocks.N`` keeps the flat order;
``up_blocks.I`` groups the decoder's residual blocks with their upsampler). One function maps a
diffusers name to the original one; both directions come from it.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

# Inside a residual block: diffusers' layer name -> the original Sequential index / name.
_RESIDUAL = {"norm1": "residual.0", "conv1": "residual.2", "norm2": "residual.3", "conv2": "residual.6",
             "conv_shortcut": "shortcut"}
_TOP = {"quant_conv": "conv1", "post_quant_conv": "conv2"}
_PART = {"conv_in": "conv1", "norm_out": "head.0", "conv_out": "head.2"}
_MID = {"resnets.0": "middle.0", "attentions.0": "middle.1", "resnets.1": "middle.2"}


def _residual_tail(tail: str) -> str:
    """``conv1.weight`` inside a residual block -> ``residual.2.weight`` (resample / attention tails unchanged)."""
    layer, _, param = tail.partition(".")
    return f"{_RESIDUAL[layer]}.{param}" if layer in _RESIDUAL else tail


def diffusers_to_original_name(name: str, up_resnets: int = 3) -> str:
    """One diffusers ``AutoencoderKLWan`` weight name -> its name in ``Wan2.1_VAE.pth``.

    ``up_resnets``: residual blocks per decoder up block (``num_res_blocks + 1``; Wan2.1: 3)."""
    head, _, rest = name.partition(".")
    if head in _TOP:
        return f"{_TOP[head]}.{rest}"
    part, _, rest = rest.partition(".")
    if part in _PART:
        return f"{head}.{_PART[part]}.{rest}"
    if part == "mid_block":
        m = re.match(r"(resnets\.\d+|attentions\.\d+)\.(.+)", rest)
        if m:
            return f"{head}.{_MID[m.group(1)]}.{_residual_tail(m.group(2))}"
    if part == "down_blocks":
        i, _, tail = rest.partition(".")
        return f"{head}.downsamples.{i}.{_residual_tail(tail)}"
    if part == "up_blocks":
        m = re.match(r"(\d+)\.(resnets|upsamplers)\.(\d+)\.(.+)", rest)
        if m:
            block, kind, j, tail = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
            flat = block * (up_resnets + 1) + (j if kind == "resnets" else up_resnets)
            return f"{head}.upsamples.{flat}.{_residual_tail(tail) if kind == 'resnets' else tail}"
    raise ValueError(f"Wan VAE: no original name known for diffusers weight {name!r}")


def original_to_diffusers(diffusers_names: Iterable[str]) -> dict[str, str]:
    """``{original name: diffusers name}`` for every weight of a diffusers ``AutoencoderKLWan``."""
    names = list(diffusers_names)
    up = {int(m.group(1)) for n in names if (m := re.match(r"decoder\.up_blocks\.0\.resnets\.(\d+)\.", n))}
    up_resnets = max(up) + 1 if up else 3
    return {diffusers_to_original_name(n, up_resnets): n for n in names}
