"""Fused LayerNorm + adaLN modulate and the gated residual add (ops ``streamgen::layer_norm_modulate``,
``streamgen::gated_residual``)."""
from streamgen.kernels.adaln.op import gated_residual, layer_norm_modulate
from streamgen.kernels.adaln.reference import gated_residual_reference, layer_norm_modulate_reference

__all__ = ["gated_residual", "gated_residual_reference", "layer_norm_modulate", "layer_norm_modulate_reference"]
