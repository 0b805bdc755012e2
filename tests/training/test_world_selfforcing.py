"""The pure Self-Forcing chain kept beside the shipped world (streamgen/weights/world/selfforcing): its three
networks load, the teacher's record drives the real score and the ODE stage, and the two compared runs
(pure and regression-anchored) differ only in the anchor."""
from __future__ import annotations

import json
from pathlib import Path

from streamgen.checkpoints.folders import load_checkpoint_dir
from streamgen.checkpoints.io import read_json
from streamgen.training.teacher_record import ode_teacher_kind, read_record, teacher_attention

FOLDER = Path(__file__).resolve().parents[2] / "streamgen" / "weights" / "world" / "selfforcing"


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_the_chain_loads_and_its_teacher_is_read_as_trained():
    for name in ("teacher", "student", "critic"):
        config, model = load_checkpoint_dir(FOLDER / name)
        assert config.name == "world-pong" and sum(p.numel() for p in model.parameters()) > 900_000, name
    assert read_record(FOLDER / "teacher")["recipe"] == "ar_teacher"
    assert teacher_attention("auto", FOLDER / "teacher") == "teacher_forcing"
    assert ode_teacher_kind("auto", FOLDER / "teacher") == "causal"
    # the kept student and critic are the same step of the pure run, which its log reached
    steps = {read_json(FOLDER / n / "config.json")["metadata"]["step"] for n in ("student", "critic")}
    assert len(steps) == 1
    logged = [json.loads(line)["step"] for line in (FOLDER / "runs" / "sf" / "log.jsonl").read_text().splitlines()]
    assert steps.pop() in logged


def test_the_anchored_run_differs_from_the_pure_one_only_by_the_anchor():
    pure = _flat(json.loads((FOLDER / "runs" / "sf" / "run_config.json").read_text()))
    anchored = _flat(json.loads((FOLDER / "runs" / "sf_anchor" / "run_config.json").read_text()))
    assert pure["recipe"] == anchored["recipe"] == "self_forcing"
    assert pure.get("dmd.regression_weight", 0.0) == 0.0 and anchored["dmd.regression_weight"] == 0.1
    when = {"train.steps", "train.time_limit_s"}  # how long each ran: by step count or by a time limit
    assert {k for k in pure.keys() | anchored.keys() if pure.get(k) != anchored.get(k)} - when == {"dmd.regression_weight"}
