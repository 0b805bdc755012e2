"""Every command, given a bad input, prints one line naming the bad value and exits 2 (no traceback).

Each case is a real ``streamgen`` process; they run a few at a time, since most of their cost is
importing torch.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from streamgen.pipeline import WEIGHTS_DIR, shipped_models

NO_GPU = not torch.cuda.is_available()


def streamgen(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamgen.cli.main", *args], capture_output=True, text=True,
                          timeout=240, cwd=cwd)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A corrupt checkpoint folder (a real config, a truncated safetensors file) and a plain file where a
    folder is wanted."""
    root = tmp_path_factory.mktemp("bad")
    corrupt = root / "corrupt"
    corrupt.mkdir()
    source = WEIGHTS_DIR / "world" if "world" in shipped_models() else None
    if source is not None:
        shutil.copy(source / "config.json", corrupt / "config.json")
        (corrupt / "model.safetensors").write_bytes((source / "model.safetensors").read_bytes()[:4096])
    else:  # a bare source tree: a config of our format around a broken file
        (corrupt / "config.json").write_text(json.dumps({"format": "streamgen", "format_version": 1, "model": {}}))
        (corrupt / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    (root / "a_file").write_text("not a folder")
    return root


def busy_port() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


@pytest.mark.timeout(900)  # about 25 processes of 3 s of CPU each; a shared machine stretches that
def test_bad_inputs_are_one_line_naming_the_value(workdir):
    listener = busy_port()
    port = str(listener.getsockname()[1])
    # (arguments, texts the one line must contain)
    cases = [
        (["generate", "--model", "no-such-model"], ["no-such-model", "preset"]),
        (["generate", "--model", "./runs/not-there"], ["./runs/not-there", "does not exist"]),
        (["bench", "--model", "corrupt"], ["model.safetensors", "safetensors"]),
        (["generate", "--attention", "flash"], ["flash"]),
        (["generate", "-o", "/proc/out.mp4"], ["/proc/out.mp4", "not writable"]),
        (["generate", "-o", "a_file/out.mp4"], ["a_file/out.mp4"]),
        (["generate", "-o", "."], ["is a folder"]),
        (["generate", "--set", "no_such_key=1"], ["no_such_key", "window_frames"]),
        (["generate", "--set", "num_layers=2.5"], ["num_layers", "2.5", "integer"]),
        (["bench", "--set", "fps=fast"], ["fps", "fast", "number"]),
        (["generate", "--set", "patch=[1,2]"], ["patch", "[1,2]"]),
        (["bench", "--blocks", "0"], ["--blocks", "'0'"]),
        (["serve", "--port", port, "--model", "tiny"], [port, "cannot listen"]),
        (["serve", "--model", "no-such-model", "--port", port], ["no-such-model"]),
        (["serve", "--max-sessions", "0"], ["max_sessions", "0"]),
        (["evaluate", "--data", "missing-data"], ["missing-data", "python -m streamgen.training.data.atari"]),
        (["train", "no-such-recipe"], ["no-such-recipe", "teacher"]),
        (["train", "teacher", "--set", "train.steps=1.5"], ["train.steps", "1.5", "integer"]),
        (["train", "teacher", "--set", "train.no_such_key=1"], ["no_such_key", "train"]),
        (["train", "teacher", "--set", "model_overrides.num_layers=x"], ["model_overrides.num_layers", "'x'"]),
        (["train", "teacher", "--data", "missing-latents"], ["missing-latents"]),
        (["train", "teacher", "--resume", "missing-run"], ["missing-run"]),
        (["train", "teacher", "--out", "a_file"], ["a_file", "not a folder"]),
    ]
    if NO_GPU:
        cases += [
            (["generate", "--device", "cuda"], ["cuda", "no CUDA GPU"]),
            (["train", "teacher", "--set", "train.device=cuda"], ["train.device", "cuda"]),
        ]
    try:
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda case: streamgen(*case[0], cwd=workdir), cases))
    finally:
        listener.close()
    failures = []
    for (args, wanted), proc in zip(cases, results):
        lines = proc.stderr.strip().splitlines()
        problems = []
        if proc.returncode != 2:
            problems.append(f"exit {proc.returncode}")
        if len(lines) != 1:
            problems.append(f"{len(lines)} stderr lines")
        problems += [f"{w!r} not named" for w in wanted if w not in proc.stderr]
        if "Traceback" in proc.stderr:
            problems.append("traceback")
        if problems:
            failures.append(f"streamgen {' '.join(args)}: {', '.join(problems)}: {proc.stderr[-600:]!r}")
    assert not failures, "\n".join(failures)
    assert not (workdir / "a_file" / "out.mp4").exists()


def test_serve_checks_the_port_before_loading_the_model(workdir):
    """With the port taken, `serve --model world` fails at once, with no model loaded (no log line at all)."""
    listener = busy_port()
    port = listener.getsockname()[1]
    try:
        proc = streamgen("serve", "--model", "world" if "world" in shipped_models() else "tiny", "--port", str(port),
                         "--log-level", "debug", cwd=workdir)
    finally:
        listener.close()
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"streamgen serve: error: --port {port}: cannot listen on 127.0.0.1:{port} "
                                   "(Address already in use)")


def test_help_texts_are_complete():
    """Every option of every command has a help text, and `streamgen --help` lists every command with one."""
    from streamgen.cli.main import PLUGIN_HELP, build_parser
    from streamgen.server.cli import build_parser as serve_parser
    from streamgen.training.cli import build_parser as train_parser
    from streamgen.training.evaluate_cli import build_parser as evaluate_parser

    top = build_parser()
    sub = next(a for a in top._actions if a.choices)  # argparse keeps subparsers in its actions
    parsers = {name: p for name, p in sub.choices.items() if name not in PLUGIN_HELP}
    parsers.update(serve=serve_parser(), train=train_parser(), evaluate=evaluate_parser())
    missing = [f"{name} {a.option_strings or a.dest}" for name, p in parsers.items() for a in p._actions
               if not a.help]
    assert not missing, missing
    assert {c.dest for c in sub._choices_actions} == set(sub.choices)
    assert all(c.help and not c.help.startswith("(from a plug-in)") for c in sub._choices_actions)
    text = subprocess.run([sys.executable, "-m", "streamgen.cli.main", "--help"], capture_output=True, text=True,
                          timeout=120).stdout
    description = text.split("\n\n")[1]
    assert description.rstrip().endswith("."), description  # a whole sentence, not cut at a line end
    for name in ("generate", "bench", "info", "serve", "train", "evaluate"):
        assert f"    {name}" in text, name
