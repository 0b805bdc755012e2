"""``streamgen evaluate --model avatar``: its arguments, the checks made before any model loads, the JSON.

``evaluate_cli.main`` hands over here when ``--model`` is an avatar (a model with speech in); the measures
are ``avatar_evaluate.evaluate_avatar``. A bad argument is one line and exit code 2.
"""
from __future__ import annotations

import json
from pathlib import Path

from streamgen.cli.checks import Parser, UsageError, check_model, check_output_file, loading, report

BUILD_DATA = "python -m streamgen.training.data.avatar --out {data} --train 400 --val 40 --test 40 --seed 0"


def build_parser():
    p = Parser(prog="streamgen evaluate", description="An avatar on held-out voices, texts and identities: lip sync "
               "(mouth opening against the truth: correlation, error in px, lag), PSNR, the teacher comparison, "
               "identity and drift over a long stream, printed as JSON (docs/models.md, 'Avatars'). Progress goes "
               "to stderr.")
    p.add_argument("--model", default="avatar", help="the avatar: the shipped default, a checkpoint, run or step folder")
    p.add_argument("--data", default="data/avatar", help="the avatar set (meta.json + val/ and test/ clips; default "
                   "data/avatar); built by " + BUILD_DATA.format(data="DATA"))
    p.add_argument("--split", choices=("val", "test"), default="val",
                   help="held-out split (default val, where every choice is made; test: once per shipped model)")
    p.add_argument("--clips", type=int, default=None, help="clips of the split used (default all)")
    p.add_argument("--frames", type=int, default=10000, help="frames of the long stream (identity, drift, collapse; "
                   "default 10000; 0: skip)")
    p.add_argument("--teacher", default=None, help="the bidirectional teacher (run, step or weights folder) to compare with")
    p.add_argument("--teacher-steps", type=int, default=24, help="Euler steps of the teacher (default 24)")
    p.add_argument("--teacher-guidance", type=float, default=2.0, help="audio guidance of the teacher (default 2; 1: none)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    return p


def check_args(a) -> None:
    """Everything checkable before a model loads: the dataset first (the usual first-run miss)."""
    meta = Path(a.data) / "meta.json"
    if not meta.is_file():
        raise UsageError(f"--data {a.data}: no avatar set there (no {meta}); build it with: {BUILD_DATA.format(data=a.data)}")
    if not (Path(a.data) / a.split).is_dir():
        raise UsageError(f"--data {a.data}: no {a.split}/ split folder")
    for name in ("clips", "threads", "teacher_steps"):
        value = getattr(a, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} {value}: must be >= 1")
    if a.frames < 0:
        raise UsageError(f"--frames {a.frames}: must be >= 0")
    if a.teacher_guidance < 1:
        raise UsageError(f"--teacher-guidance {a.teacher_guidance}: must be >= 1")
    check_model(a.model)
    if a.teacher:
        check_model(a.teacher)
    if a.out:
        check_output_file(a.out, "--out")


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        check_args(a)
        import torch

        from streamgen.checkpoints.folders import load_checkpoint_dir
        from streamgen.checkpoints.run_folder import model_folder
        from streamgen.pipeline import load_pipeline

        if a.threads:
            torch.set_num_threads(a.threads)
        with loading(f"--model {a.model}"):
            pipe = load_pipeline(a.model, device="cpu", dtype=torch.float32)
        if not pipe.can_prime:
            raise UsageError(f"--model {a.model}: no video autoencoder beside it (an avatar needs one to take its reference)")
        teacher = None
        if a.teacher:
            with loading(f"--teacher {a.teacher}"):
                _, teacher = load_checkpoint_dir(model_folder(a.teacher))
                teacher = teacher.float().eval()
            if teacher.config.audio_in != pipe.config.audio_in:
                raise UsageError(f"--teacher {a.teacher}: its speech input differs from --model {a.model}'s")
    except UsageError as err:
        return report("streamgen evaluate", err)
    from .avatar_evaluate import evaluate_avatar

    result = evaluate_avatar(pipe, a.data, split=a.split, clips=a.clips, frames=a.frames, teacher=teacher,
                             teacher_steps=a.teacher_steps, teacher_guidance=a.teacher_guidance, seed=a.seed,
                             progress=not a.no_progress)
    text = json.dumps(result, indent=1, default=float)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0
