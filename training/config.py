"""Training configuration: one :class:`RunConfig` per run, built by a recipe (``training/recipes.py``)
and edited with ``--set dotted.key=value``.

Defaults follow the public Self-Forcing / CausVid settings where they exist (docs/training.md lists
them); each states its reason. Configs are plain dataclasses, so a run's config is
saved as JSON beside its checkpoints and a resumed run can check it did not change.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

RECIPE_KINDS = ("teacher", "ar_teacher", "ode_init", "self_forcing", "long_tuning", "rollout_regression")


@dataclass(kw_only=True)
class TrainConfig:
    """Optimiser, loop length and the cadence of logs, samples and checkpoints."""

    # AdamW everywhere (Self-Forcing's trainer); weight decay 0.01 is its default config.
    optimizer: str = "adamw"
    lr: float = 1e-4  # teacher-from-scratch scale; the distillation recipes lower it (SF: 2e-6)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    eps: float = 1e-8
    grad_clip: float = 10.0  # SF clips both networks' grad norm at 10
    steps: int = 1000
    batch: int = 1  # per process; SF trains with 1 per GPU
    seed: int = 0
    log_every: int = 10
    sample_every: int = 0  # 0 = no sample videos
    sample_blocks: int = 4  # blocks per sample video
    # Decoders of the sample videos: None = those load_pipeline pairs with the model config (preview
    # decoders); or a pipeline name / folder whose trained decoders to use (e.g. the world autoencoders).
    sample_decoder: str | None = None
    checkpoint_every: int = 100  # 0 = only at the end
    keep_checkpoints: int = 2  # older step folders are deleted; the latest is always kept
    # EMA of the generator (SF: 0.99 from step 200); ema_decay 0 disables it.
    ema_decay: float = 0.99
    ema_start: int = 200
    # Compute dtype: float32, or bfloat16 by autocast (weights, optimiser states and EMA stay fp32).
    dtype: str = "float32"
    device: str = "auto"  # auto = cuda when available, else cpu
    # Learning-rate schedule, a pure function of the step (so resume stays exact): linear warm-up over
    # `warmup` steps, then constant or a cosine decay to `min_lr_ratio` x lr at `steps`. Applies to every
    # optimiser of the run (student and critic alike).
    lr_schedule: str = "constant"
    warmup: int = 0
    min_lr_ratio: float = 0.1
    # Flow-matching recipes (teacher, ar_teacher): extra loss weight on latent cells that change between
    # frames (losses.motion_weights); 0 = plain MSE.
    motion_weight: float = 0.0
    # torch.compile the trainable networks' whole-clip forwards (forward, forward_teacher_forcing): fewer
    # kernel launches per step where a small model is launch-bound on a GPU. Streaming forwards
    # (forward_cached, in rollouts) stay eager. The first step pays the compilation.
    compile: bool = False
    # Stop (with a checkpoint) once the loop has run this many seconds; 0 = no limit. For fixed-length
    # device leases: a later run resumes from the checkpoint.
    time_limit_s: float = 0.0

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"TrainConfig: lr_schedule={self.lr_schedule!r} must be 'constant' or 'cosine'")
        if self.warmup < 0 or self.time_limit_s < 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"TrainConfig: warmup={self.warmup!r} and time_limit_s={self.time_limit_s!r} must be >= 0, "
                             f"min_lr_ratio={self.min_lr_ratio!r} in [0, 1]")
        if self.optimizer not in ("adamw", "adam"):
            raise ValueError(f"TrainConfig: optimizer={self.optimizer!r} must be 'adamw' or 'adam'")
        for name in ("steps", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig: {name}={getattr(self, name)!r} must be >= 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"TrainConfig: ema_decay={self.ema_decay!r} must be in [0, 1)")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"TrainConfig: dtype={self.dtype!r} must be 'float32' or 'bfloat16'")


@dataclass(kw_only=True)
class DMDConfig:
    """Distribution matching distillation (Self-Forcing ``model/dmd.py``)."""

    # Real score = teacher with CFG ``uncond + w (cond - uncond)``; SF's "3.0" in its own convention
    # (cond + 3 (cond - uncond)) is w = 4 here.
    guidance_scale: float = 4.0
    # Critic (fake score) updates per generator update (SF ``dfake_gen_update_ratio: 5``).
    critic_steps: int = 5
    critic_lr: float = 4e-7  # SF critic lr; the generator uses TrainConfig.lr
    # Score timesteps: uniform, shifted with ``shift`` and clamped to [min_t, max_t] (SF: shift 5, [20, 980]).
    min_t: float = 20.0
    max_t: float = 980.0
    shift: float = 5.0
    # Gradient truncation: one gradient-carrying forward per block, at a step index drawn per block
    # ("block": every denoising step is trained, in every block position) or once per rollout and shared
    # by its blocks ("rollout", SF ``same_step_across_blocks``); last_step_only pins it to the last step
    # (the shipped rollout-regression chain: an option, not Self-Forcing).
    exit_per: str = "block"
    last_step_only: bool = False
    # The attention the real score calls the teacher under: "auto" reads the teacher's training record
    # (``training/teacher_record.py``): a bidirectional teacher without a mask, an ar_teacher through its
    # teacher-forcing forward on the generated clean clip. Explicit values are for teachers saved before
    # the record existed.
    teacher_attention: str = "auto"
    # Action guidance: the real score's unconditional branch drops the actions (the null action) as well
    # as the text, so ``guidance_scale`` pushes action following. Needs a teacher trained with
    # ``data.action_dropout > 0`` (it then knows the null action); false keeps the actions in both branches.
    guide_actions: bool = True
    # Audio guidance (avatars): the unconditional branch of the real score, and of the ODE initialisation's
    # teacher trajectories, also hears the null speech, so the guidance scale pushes lip sync. Needs a
    # teacher trained with ``data.audio_dropout > 0``; false keeps the speech in both branches.
    guide_audio: bool = True
    # Real blocks of the clip written clean into the student's caches before its rollout (as
    # ``Session.prime``); the rollout generates the rest. 0 = from noise (text-to-video Self-Forcing). A
    # world needs enough to reveal the hidden state its picture does not show (Pong: the frame-skip phase,
    # revealed by a press from rest; the world recipe primes 3 blocks = 12 frames, as its sessions are).
    context_blocks: int = 0
    # > 0 anchors the Self-Forcing student to the recording: its generated blocks (after the real context)
    # also regress onto the clip's real continuation (``losses.rollout_regression_loss``, audio weighed by
    # ``regression.audio_weight``), times this weight, beside the DMD loss. 0 = pure Self-Forcing (the
    # paper's); a small weight (the world's comparison row: 0.1) is the "regression-anchored" student.
    regression_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.regression_weight < 0:
            raise ValueError(f"DMDConfig: regression_weight={self.regression_weight!r} must be >= 0")
        if self.regression_weight > 0 and self.context_blocks < 1:
            raise ValueError(f"DMDConfig: regression_weight={self.regression_weight!r} needs context_blocks >= 1 "
                             "(a rollout from noise has no recorded continuation to regress onto)")
        if self.critic_steps < 1:
            raise ValueError(f"DMDConfig: critic_steps={self.critic_steps!r} must be >= 1")
        if not 0.0 <= self.min_t < self.max_t <= 1000.0:
            raise ValueError(f"DMDConfig: min_t={self.min_t!r}, max_t={self.max_t!r} must satisfy 0 <= min_t < max_t <= 1000")
        if self.exit_per not in ("block", "rollout"):
            raise ValueError(f"DMDConfig: exit_per={self.exit_per!r} must be 'block' or 'rollout'")
        if self.teacher_attention not in ("auto", "bidirectional", "teacher_forcing"):
            raise ValueError(f"DMDConfig: teacher_attention={self.teacher_attention!r} must be 'auto', 'bidirectional' "
                             "or 'teacher_forcing'")
        if self.context_blocks < 0:
            raise ValueError(f"DMDConfig: context_blocks={self.context_blocks!r} must be >= 0")


@dataclass(kw_only=True)
class ODEConfig:
    """Teacher trajectories for the ODE initialisation of the causal student."""

    # Euler steps of the teacher between consecutive student timesteps (so the grid hits them exactly;
    # 12 x 4 = 48 steps, the public scripts' count, without their timestep mismatch).
    substeps: int = 12
    guidance_scale: float = 6.0  # CausVid / SF pair generation: CFG 6
    # Trajectories computed once (deterministically from the seed) and reused; saved under the run folder.
    num_pairs: int = 64
    # "bidirectional": the teacher denoises the whole clip at once; "causal": an autoregressive
    # (teacher-forcing) teacher generates block by block with its KV cache (Causal Forcing). "auto" reads
    # the teacher's training record (``teacher_record.ode_teacher_kind``): the way it was trained decides,
    # and an explicit value that contradicts the record is an error (it is for teachers without one).
    teacher_kind: str = "auto"

    def __post_init__(self) -> None:
        if self.substeps < 1 or self.num_pairs < 1:
            raise ValueError(f"ODEConfig: substeps={self.substeps!r} and num_pairs={self.num_pairs!r} must be >= 1")
        if self.teacher_kind not in ("auto", "bidirectional", "causal"):
            raise ValueError(f"ODEConfig: teacher_kind={self.teacher_kind!r} must be 'auto', 'bidirectional' or 'causal'")


@dataclass(kw_only=True)
class DataConfig:
    """Where batches come from."""

    # "random-latents" (smoke runs: Gaussian latents and text tokens) or a folder of latent files
    # (see training/sources.py for the format).
    source: str = "random-latents"
    # Latent frames per clip; a multiple of frames_per_block. None = the model's window.
    num_frames: int | None = None
    # Probability of dropping the text condition (teacher training), for classifier-free guidance.
    cfg_dropout: float = 0.1
    # Probability of replacing a sample's actions by the null action (teacher training), so the teacher
    # also learns the action-free distribution and the real score can guide by actions (DMD's
    # ``guide_actions``); the text's rate.
    action_dropout: float = 0.1
    # Probability of replacing a sample's speech windows (``audio_in``, avatars) by the null speech, so the
    # teacher also learns the speech-free distribution and the real score can guide by the speech (DMD's
    # ``guide_audio``); the text's rate. A batch without speech ignores it.
    audio_dropout: float = 0.1
    # Batch keys that run along time (dim 1 = frames * r): sliced per block in the streaming rollout.
    frame_keys: tuple[str, ...] = ("actions", "keys", "mouse", "audio", "audio_in")

    def __post_init__(self) -> None:
        self.frame_keys = tuple(self.frame_keys)
        for name in ("cfg_dropout", "action_dropout", "audio_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"DataConfig: {name}={getattr(self, name)!r} must be in [0, 1]")


@dataclass(kw_only=True)
class InitConfig:
    """Where the networks start from: checkpoint folders (``streamgen`` format) or None = random init."""

    teacher: str | None = None  # frozen real score / trajectory teacher
    student: str | None = None  # the network being trained (teacher recipe: the teacher itself)
    critic: str | None = None  # fake score; None = a copy of the teacher (SF initialises it from the base)


@dataclass(kw_only=True)
class LongConfig:
    """LongLive-style long tuning: rollouts longer than the teacher's window."""

    # Latent frames of the long rollout (rolling cache with sinks, as at inference).
    rollout_frames: int = 24
    # DMD is applied to the last `teacher_frames` frames (the teacher's window); None = the model's window.
    teacher_frames: int | None = None
    # Probability that a rollout switches prompt (LongLive ``dmd_switch``) at a random block before the
    # judged window, re-caching under the new prompt as ``Session.set_prompt`` does; DMD then judges the
    # window under the new prompt. Needs text in the batch (worlds without prompts never switch).
    switch_prob: float = 0.5


@dataclass(kw_only=True)
class RegressionConfig:
    """Rollout regression: the student rolls out from real context under the clip's own actions and its
    blocks regress onto the clip's real continuation (for worlds whose data is the ground truth)."""

    # Real blocks written clean into the caches before the rollout, as ``Session.prime`` does; the rest of
    # the clip is generated (and judged). The clip length is ``data.num_frames`` (default: the window).
    context_blocks: int = 1
    # Weight of the audio latents' mean squared error next to the video latents' (joint models).
    audio_weight: float = 1.0
    # > 0 adds Self-Forcing's DMD loss on the last window of generated frames, times this weight (real
    # score: ``init.teacher``; fake score: a critic from ``init.critic`` or the teacher, updated once per
    # step at ``dmd.critic_lr``; ``dmd.*`` sets the score timesteps and guidance): the regression pulls
    # objects to where the recording has them, DMD keeps them sharp where the student is unsure.
    dmd_weight: float = 0.0
    # > 0 adds this weight to the video latents' columns in ``focus_cols`` (fractions of the frame's width,
    # [lo, hi]; empty = none): the band of the controlled object, weighed whether it moves or holds still
    # (``losses.column_band_weights``). Pong's paddle: ``[0.85, 0.925]``.
    focus_weight: float = 0.0
    focus_cols: tuple[float, ...] = ()
    # > 0 weights the audio latents' error by their change from the previous latent frame (as
    # ``train.motion_weight`` does the video): a beep's onset and end weigh more than the silence around.
    audio_change_weight: float = 0.0

    def __post_init__(self) -> None:
        self.focus_cols = tuple(float(c) for c in self.focus_cols)
        if self.dmd_weight < 0:
            raise ValueError(f"RegressionConfig: dmd_weight={self.dmd_weight!r} must be >= 0")
        if self.audio_change_weight < 0:
            raise ValueError(f"RegressionConfig: audio_change_weight={self.audio_change_weight!r} must be >= 0")
        if self.focus_weight < 0:
            raise ValueError(f"RegressionConfig: focus_weight={self.focus_weight!r} must be >= 0")
        if self.focus_cols and not (len(self.focus_cols) == 2 and 0.0 <= self.focus_cols[0] < self.focus_cols[1] <= 1.0):
            raise ValueError(f"RegressionConfig: focus_cols={self.focus_cols!r} must be [lo, hi] with 0 <= lo < hi <= 1")
        if self.focus_weight > 0 and not self.focus_cols:
            raise ValueError(f"RegressionConfig: focus_weight={self.focus_weight!r} needs focus_cols (the band to weigh)")
        if self.context_blocks < 0:
            raise ValueError(f"RegressionConfig: context_blocks={self.context_blocks!r} must be >= 0")
        if self.audio_weight < 0:
            raise ValueError(f"RegressionConfig: audio_weight={self.audio_weight!r} must be >= 0")


@dataclass(kw_only=True)
class RunConfig:
    recipe: str = "teacher"
    model: str = "tiny"  # a preset name or a checkpoint folder for the architecture
    model_overrides: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    dmd: DMDConfig = field(default_factory=DMDConfig)
    ode: ODEConfig = field(default_factory=ODEConfig)
    data: DataConfig = field(default_factory=DataConfig)
    init: InitConfig = field(default_factory=InitConfig)
    long: LongConfig = field(default_factory=LongConfig)
    regression: RegressionConfig = field(default_factory=RegressionConfig)
    # Distributed strategy under torchrun: "ddp" (replicated weights, averaged gradients) or "fsdp".
    parallel: str = "ddp"

    def __post_init__(self) -> None:
        if self.recipe not in RECIPE_KINDS:
            raise ValueError(f"RunConfig: recipe={self.recipe!r} must be one of {RECIPE_KINDS}")
        if self.parallel not in ("ddp", "fsdp"):
            raise ValueError(f"RunConfig: parallel={self.parallel!r} must be 'ddp' or 'fsdp'")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        return _build(cls, data, "")


def _build(cls, data: dict[str, Any], where: str):
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown config keys {[where + k for k in unknown]}; known: {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        default = getattr(cls(), name) if name in known else None
        if is_dataclass(default) and isinstance(value, dict):
            value = _build(type(default), value, f"{where}{name}.")
        kwargs[name] = value
    return cls(**kwargs)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # bare strings: --set model=tiny


def apply_overrides(config: RunConfig, pairs: list[str]) -> RunConfig:
    """Apply ``key=value`` pairs (dotted keys, JSON values) and re-validate: ``train.lr=1e-5``,
    ``train.betas=[0,0.999]``, ``model_overrides.num_layers=4``."""
    data = config.to_dict()
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        node, parts = data, key.split(".")
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                raise ValueError(f"--set {key}: {'.'.join(parts[: i + 1])!r} is not a config section")
            node = node[part]
        leaf = parts[-1]
        if leaf not in node and parts[0] != "model_overrides":
            raise ValueError(f"--set {key}: unknown key {leaf!r}; known here: {sorted(node)}")
        node[leaf] = _parse_value(value)
    return RunConfig.from_dict(data)
