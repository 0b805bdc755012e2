"""Checkpoint I/O (safetensors + JSON, atomic writes) and adapters for the public Wan-family layouts.

See docs/checkpoints.md. Nothing here imports diffusers: adapters work on plain state dicts (the VAE and
umT5 of a folder are found here and loaded by streamgen.decoders / streamgen.text).
"""
from streamgen.checkpoints.adapters import build_model, check_state_dict, load_state_dict_any
from streamgen.checkpoints.components import Components, find_components
from streamgen.checkpoints.family_detect import detect_family
from streamgen.checkpoints.folders import load_checkpoint_dir, load_weights_file
from streamgen.checkpoints.lora import merge_lora
from streamgen.checkpoints.io import load_safetensors, save_checkpoint, save_safetensors
from streamgen.checkpoints.wan_diffusers import config_from_diffusers, diffusers_to_ours, ours_to_diffusers
from streamgen.checkpoints.wan_original import config_from_wan_state_dict

__all__ = [
    "build_model", "check_state_dict", "load_state_dict_any", "load_checkpoint_dir", "load_weights_file",
    "load_safetensors", "save_checkpoint", "save_safetensors", "config_from_diffusers", "diffusers_to_ours",
    "ours_to_diffusers", "config_from_wan_state_dict", "Components", "find_components", "detect_family", "merge_lora",
]
