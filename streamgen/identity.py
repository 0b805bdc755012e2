"""Identity of an avatar: the reference image pinned in the cache as the sink frames.

LiveTalk keeps the first frames of the attention window as sinks and pins them to the reference image.
Here the reference is the stream's first block: the image repeated over the ``sink_frames`` latent frames
(``sink_frames * temporal_upsample`` pixel frames), encoded by the pipeline's video autoencoder and
written into the sink slots at ``context_noise`` like any clean block (``Session.set_reference``). The
training clips of an avatar start with the same block (``streamgen.training.data.avatar_latents``), so
the model learns to keep the face it sees in the sink.
"""
from __future__ import annotations

import numpy as np

from streamgen.config import ModelConfig
from streamgen.models.kv_cache import RollingKVCache


def reference_frames(config: ModelConfig, image) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> the sink block's pixel frames uint8 ``[sink * tu, H, W, 3]``."""
    if config.sink_frames == 0:
        raise ValueError(f"model {config.name!r} has sink_frames=0: no slots to pin a reference image in")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"reference image of dtype {image.dtype} and shape {image.shape} must be uint8 [H, W, 3]")
    return np.repeat(image[None], config.sink_frames * config.temporal_upsample, axis=0)  # [T, H, W, 3]


def copy_sink_slots(source: RollingKVCache, target: RollingKVCache) -> None:
    """Copy the sink frames' K / V (slots ``[0, sink)`` of every layer) from ``source`` into ``target``."""
    if source.sink != target.sink or source.tokens_per_frame != target.tokens_per_frame:
        raise ValueError(f"caches differ: sink {source.sink} vs {target.sink} frames, "
                         f"{source.tokens_per_frame} vs {target.tokens_per_frame} tokens per frame")
    tokens = source.sink * source.tokens_per_frame
    target.k[:, :, :tokens].copy_(source.k[:, :, :tokens])
    target.v[:, :, :tokens].copy_(source.v[:, :, :tokens])
