"""``--quantize``: the bench's CPU speed setting beyond ``--dtype`` / ``--compile`` (shared with generate).

Torch-free, so building the parser stays fast; ``streamgen.acceleration`` applies it.
"""
from __future__ import annotations

import argparse

from streamgen.config import QUANTIZE_MODES


def add_speed_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quantize", choices=QUANTIZE_MODES, default=None,
                   help="dynamic int8 linears in the transformer blocks (CPU only; streamgen.acceleration)")


def speed_settings(args: argparse.Namespace) -> dict:
    """``load_pipeline`` keywords of the flags of ``add_speed_flags``."""
    return {"quantize": args.quantize}
