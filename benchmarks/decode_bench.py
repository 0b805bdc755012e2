"""Decode time per block alone for the Wan decoders (random weights, real shapes); prints one JSON object.

Both decoders stream blocks of 3 latent frames at 832x480 (60x104 latents -> 12 frames of 480x832 per
block): the full Wan2.1 VAE (diffusers' ``AutoencoderKLWan``, base width 96, 127M parameters) and the
tiny decoder in the ``taew2_1.pth`` layout. The stream's first block (9 frames) is decoded once as
warm-up; the next ``--blocks`` are timed one by one (device synchronised around each). Reports the
median and p95 ms per block, frames/s of decode alone, and peak device memory.

Usage: ``python benchmarks/decode_bench.py [--device cuda] [--dtype bf16] [--blocks 6]``; a CPU dry run
of the script itself: ``--device cpu --height 16 --width 24 --base-dim 8 --blocks 1``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
FRAMES_PER_BLOCK = 3  # latent frames per block (Self-Forcing / LongLive / CausVid)


def full_vae(base_dim: int, device: str, dtype: torch.dtype):
    from diffusers import AutoencoderKLWan

    from streamgen.decoders.wan_vae import WanVAEDecoder

    torch.manual_seed(0)
    with torch.device(device):  # diffusers' own random init, done on the device (fast on a GPU)
        vae = AutoencoderKLWan(base_dim=base_dim)
    torch.nn.Module.to(vae, dtype=dtype)  # plain cast (diffusers' .to warns about fp32-kept modules; it has none)
    return WanVAEDecoder(vae.eval()).to(device)


def tiny(device: str, dtype: torch.dtype):
    from streamgen.decoders.tiny_wan import TinyWanDecoder

    torch.manual_seed(0)
    model = TinyWanDecoder()  # torch's default random init
    model.encoder.to(dtype)
    model.decoder.to(dtype)
    return model.to(device).eval()


def time_blocks(decoder, latent_hw: tuple[int, int], blocks: int, device: str) -> dict:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    g = torch.Generator(device="cpu").manual_seed(1)
    latents = torch.randn(1, FRAMES_PER_BLOCK * (blocks + 1), 16, *latent_hw, generator=g).to(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    state = decoder.init_state()
    times, frames = [], 0
    for b in range(blocks + 1):
        sync()
        t0 = time.perf_counter()
        out, state = decoder.decode(latents[:, b * FRAMES_PER_BLOCK : (b + 1) * FRAMES_PER_BLOCK], state)
        sync()
        if b > 0:  # block 0 (the stream's first, 9 frames) is the warm-up
            times.append((time.perf_counter() - t0) * 1000)
            frames = out.shape[1]
    p50 = statistics.median(times)
    return {"block_ms_p50": round(p50, 2), "block_ms_p95": round(sorted(times)[int(0.95 * (len(times) - 1))], 2),
            "frames_per_block": frames, "decode_frames_per_second": round(frames / p50 * 1000, 1),
            "frame_size": list(out.shape[-2:]), "blocks_timed": len(times),
            "peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20) if device.startswith("cuda") else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--base-dim", type=int, default=96, help="full VAE base width (96: Wan2.1's)")
    args = ap.parse_args(argv)
    if args.height % 8 or args.width % 8 or args.blocks < 1:
        print(f"decode_bench: --height {args.height} / --width {args.width} must be multiples of 8 and "
              f"--blocks {args.blocks} >= 1", file=sys.stderr)
        return 2
    dtype, hw = DTYPES[args.dtype], (args.height // 8, args.width // 8)
    result = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
              "dtype": args.dtype, "resolution": f"{args.width}x{args.height}", "latent_frames_per_block": FRAMES_PER_BLOCK}
    builders = {"vae": lambda: full_vae(args.base_dim, args.device, dtype), "tiny": lambda: tiny(args.device, dtype)}
    for name, build in builders.items():
        try:
            with torch.inference_mode():
                result[name] = time_blocks(build(), hw, args.blocks, args.device)
        except Exception as exc:  # noqa: BLE001 - one decoder failing (e.g. no diffusers) still reports the other
            result[name] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    result["vae"]["base_dim"] = args.base_dim
    print(json.dumps(result))
    return 0 if all("block_ms_p50" in result[n] for n in builders) else 1


if __name__ == "__main__":
    sys.exit(main())
