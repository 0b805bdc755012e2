"""The project cites only its own docs: no file names a design document the repository does not have."""
import subprocess

from tests.source_layout import ROOT

# Spelled in parts so this file does not match itself: the design map and the reference figures that
# the project's planning used live outside the repository.
OUTSIDE = ("DESIGN" + ".md", "ANCHORS" + ".md")


def test_no_file_cites_an_outside_design_file():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert len(files) > 100  # the checkout's tracked files were listed
    hits = []
    for name in files:
        path = ROOT / name
        if not path.is_file() or path.suffix in (".safetensors", ".npz", ".png", ".jpg"):
            continue
        for n, line in enumerate(path.read_text(errors="ignore").splitlines(), 1):
            if any(name_ in line for name_ in OUTSIDE):
                hits.append(f"{name}:{n}")
    assert not hits, f"files citing {' or '.join(OUTSIDE)}, which this repository does not have (cite docs/architecture.md):\n" + "\n".join(hits)
