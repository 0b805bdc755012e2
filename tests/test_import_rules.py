"""The import rules of docs/architecture.md, enforced with import-linter contracts (a real lint-imports run).

The distribution maps root folders into the ``streamgen`` namespace, which import-linter cannot see
through an editable install; the test lays the installed layout out in a temporary folder first.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYOUT = {
    "streamgen": "streamgen",
    "streamgen/kernels": "kernels",
    "streamgen/server": "server",
    "streamgen/training": "training",
    "streamgen_client": "client/streamgen_client",
}


def test_import_contracts_hold(tmp_path):
    ignore = shutil.ignore_patterns("__pycache__", "*.safetensors", "static")
    for dest, src in LAYOUT.items():
        shutil.copytree(ROOT / src, tmp_path / dest, ignore=ignore, dirs_exist_ok=True)
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    proc = subprocess.run([lint], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_install_exposes_no_top_level_kernels_server_or_training(tmp_path):
    # Run outside the checkout so only what the installation provides is importable.
    code = (
        "import importlib.util, streamgen.kernels, streamgen.server, streamgen.training;"
        "print([n for n in ('kernels', 'server', 'training') if importlib.util.find_spec(n) is not None"
        " and 'streamgen' not in str(importlib.util.find_spec(n).origin)"
        " and str(importlib.util.find_spec(n).origin).startswith(%r)])" % str(ROOT)
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
