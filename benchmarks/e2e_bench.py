"""End to end at 832x480 with a real decoder: frames/s and time to first frame *including the decode*.

``wan2.1-1.3b`` with random weights (throughput does not depend on them) streams through the Wan2.1 VAE
(``--decoder vae``, diffusers ``AutoencoderKLWan`` at its real widths, base_dim 96) or the tiny decoder
(``--decoder tiny``, the taew2_1 layout at its real widths), both with random weights written once to
``--cache`` in their real file layouts and read back by the project's own loaders. Prints one JSON
object: ``streamgen bench``'s numbers plus the decoder, the median decode time per block alone and the
compile flag. Meant for CUDA (benchmarks/gpu_check.sh); a small preset with ``--device cpu`` smoke-tests it.

    python benchmarks/e2e_bench.py --decoder tiny --attention triton --compile --blocks 30
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch


def decoder_files(cache: Path, kind: str) -> Path:
    """The random real-width decoder in its real layout under ``cache`` (written on first use)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package: the layout writers
    from tests.checkpoints.wan_layouts import write_taew, write_wan_vae_diffusers

    if kind == "vae":
        path = cache / "vae"
        if not (path / "config.json").is_file():
            write_wan_vae_diffusers(path, base_dim=96)  # Wan2.1's real widths
        return path
    path = cache / "taew2_1.pth"
    if not path.is_file():
        write_taew(path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--decoder", choices=["vae", "tiny"], required=True)
    p.add_argument("--attention", default="sdpa")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", default="cuda")
    p.add_argument("--blocks", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--model", default="wan2.1-1.3b", help="a preset with Wan's 16 latent channels")
    p.add_argument("--set", default="{}", help="JSON config overrides (a CPU smoke run uses a small preset)")
    p.add_argument("--latent", default="60x104", help="latent grid HxW (60x104 = 832x480)")
    p.add_argument("--cache", default="/tmp/streamgen-e2e-decoders", help="where the random decoders are written")
    args = p.parse_args(argv)

    import streamgen
    from streamgen.cli.bench import run_bench
    from streamgen.decoders.tiny_wan import load_tiny_wan
    from streamgen.decoders.wan_vae import load_wan_vae

    h, w = (int(v) for v in args.latent.split("x"))
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    pipe = streamgen.load_pipeline(args.model, device=device, dtype=dtype, attention_backend=args.attention,
                                   compile=args.compile, overrides={"latent_height": h, "latent_width": w, **json.loads(args.set)})
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    path = decoder_files(cache, args.decoder)
    load = load_wan_vae if args.decoder == "vae" else load_tiny_wan
    pipe.decoder = load(path, device, dtype).eval()  # the preset's preview decoder, replaced
    pipe.notes["decoder"] = {"kind": "wan-vae" if args.decoder == "vae" else "tiny-wan", "file": str(path)}

    result = run_bench(pipe, blocks=args.blocks, warmup=args.warmup)
    session = pipe.start(seed=1)  # the decode alone, per block, from the chunks' own timings
    decode = [session.step().timings["decode"] for _ in range(min(5, args.blocks))]
    session.close()
    result.update(decoder=pipe.notes["decoder"]["kind"], compiled=pipe.compiled,
                  decode_ms_p50=1000 * statistics.median(decode[1:] or decode))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
