"""Write tiny random Wan components to disk in their real file and key layouts.

Public, stable helpers (other tests build whole checkpoint folders from them):

- :func:`write_wan_vae_diffusers` -> a diffusers ``vae/`` folder (``config.json`` + ``diffusion_pytorch_model.safetensors``)
- :func:`write_wan_vae_original` -> Wan's ``Wan2.1_VAE.pth`` (a plain ``torch.save`` state dict, Wan's names)
- :func:`write_taew` -> ``taew2_1.pth`` (madebyollin/taehv's tiny autoencoder for Wan 2.1, its real widths)
- :func:`write_tokenizer` -> a tiny real umT5-style tokenizer folder (a Unigram model trained here, offline)
- :func:`write_umt5_diffusers` -> ``text_encoder/`` (``config.json`` + ``model.safetensors``) + ``tokenizer/``
- :func:`write_umt5_original` -> Wan's ``models_t5_umt5-xxl-enc-bf16.pth`` (bf16, Wan's names) + a tokenizer folder

Widths are tiny by default (the key layout is the real one; the VAE's ``base_dim=96`` gives the real
widths). Weights are drawn from ``seed`` without touching the global RNG.
"""
from __future__ import annotations

from pathlib import Path

import torch

from streamgen.decoders.wan_vae_keys import original_to_diffusers
from streamgen.text_umt5_keys import TIED, hf_to_original_name

# Tiny defaults: base width 8 keeps the VAE's layout (widths 8, 16, 32, 32) at ~0.6 MB; 16 latent
# channels are Wan's (the transformer's in/out channels must match).
TINY_VAE_BASE_DIM = 8
WAN_LATENT_CHANNELS = 16
# A few sentences to train the tiny tokenizer on (its vocabulary is their pieces).
TOKENIZER_TEXT = [
    "a cat walks along the beach at sunset",
    "a red car drives through the rain at night",
    "waves roll over dark rocks under a grey sky",
    "a dog runs across a field of snow",
    "slow camera pan over a city street with lights",
]
# Tiny umT5: 2 layers, 4 heads of 4, d_ff 32; umT5's 32 relative-position buckets.
TINY_UMT5 = dict(vocab_size=64, d_model=16, d_kv=4, num_heads=4, d_ff=32, num_layers=2,
                 relative_attention_num_buckets=32, relative_attention_max_distance=128,
                 feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, is_encoder_decoder=False)


def _tiny_vae(base_dim: int, z_dim: int, seed: int):
    from diffusers import AutoencoderKLWan

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKLWan(base_dim=base_dim, z_dim=z_dim).eval()


def write_wan_vae_diffusers(folder: str | Path, *, base_dim: int = TINY_VAE_BASE_DIM,
                            z_dim: int = WAN_LATENT_CHANNELS, seed: int = 0) -> Path:
    """A diffusers ``vae/`` folder at ``folder``; returns it."""
    folder = Path(folder)
    _tiny_vae(base_dim, z_dim, seed).save_pretrained(folder, safe_serialization=True)
    return folder


def write_wan_vae_original(path: str | Path, *, base_dim: int = TINY_VAE_BASE_DIM,
                           z_dim: int = WAN_LATENT_CHANNELS, seed: int = 0) -> Path:
    """Wan's original ``Wan2.1_VAE.pth`` layout at ``path``; the same weights as
    :func:`write_wan_vae_diffusers` with the same arguments. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = _tiny_vae(base_dim, z_dim, seed).state_dict()
    names = original_to_diffusers(sd.keys())  # original name -> diffusers name
    torch.save({orig: sd[name].clone() for orig, name in names.items()}, path)
    return path


def write_taew(path: str | Path, *, seed: int = 0) -> Path:
    """``taew2_1.pth`` at ``path`` (real widths: ~11M parameters, 45 MB fp32). Returns ``path``."""
    from streamgen.decoders.tiny_wan import TinyWanDecoder
    from tests.checkpoints.reference import randomise

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = TinyWanDecoder()
    randomise(model, seed)  # weights ~ N(0, 1/fan_in): the decoded frames are not all clamped
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, path)
    return path


def write_tokenizer(folder: str | Path) -> Path:
    """A tiny real tokenizer, umT5-style (Unigram pieces, ``<pad>`` 0, ``</s>`` 1 appended, ``<unk>`` 2),
    trained offline on :data:`TOKENIZER_TEXT` and saved with ``save_pretrained``. Returns ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import T5TokenizerFast

    folder = Path(folder)
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=TINY_UMT5["vocab_size"], unk_token="<unk>",
                                      special_tokens=["<pad>", "</s>", "<unk>"])
    tok.train_from_iterator(TOKENIZER_TEXT, trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))])
    T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                    extra_ids=0).save_pretrained(folder)
    return folder


def tiny_umt5(seed: int = 0, **overrides):
    """A tiny random ``UMT5EncoderModel`` (``TINY_UMT5`` with ``overrides``)."""
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UMT5EncoderModel(UMT5Config(**{**TINY_UMT5, **overrides})).eval()


def write_umt5_diffusers(folder: str | Path, *, seed: int = 0, **overrides) -> Path:
    """``folder/text_encoder/`` and ``folder/tokenizer/`` as in a diffusers Wan pipeline folder.
    Returns the ``text_encoder/`` path."""
    folder = Path(folder)
    tiny_umt5(seed, **overrides).save_pretrained(folder / "text_encoder", safe_serialization=True)
    write_tokenizer(folder / "tokenizer")
    return folder / "text_encoder"


def write_umt5_original(path: str | Path, tokenizer_folder: str | Path | None = None, *, seed: int = 0,
                        **overrides) -> Path:
    """Wan's ``models_t5_umt5-xxl-enc-bf16.pth`` layout (bf16) at ``path``, and the tokenizer in
    ``tokenizer_folder`` (default: ``google/umt5-xxl/`` beside ``path``, as Wan's folders have it).
    The weights equal :func:`write_umt5_diffusers`'s with the same arguments (rounded to bf16). Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = tiny_umt5(seed, **overrides).state_dict()
    torch.save({hf_to_original_name(k): v.to(torch.bfloat16).clone() for k, v in sd.items() if k != TIED}, path)
    write_tokenizer(Path(tokenizer_folder) if tokenizer_folder else path.parent / "google" / "umt5-xxl")
    return path
