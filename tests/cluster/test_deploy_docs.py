"""The Serve config and the KubeRay manifest in docs/deploy.md are valid: Serve's own schema reads them
and their ``args`` build the application (without starting Ray)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"


def _yaml_blocks() -> list[dict]:
    yaml = pytest.importorskip("yaml", reason="comes with the streamgen[cluster] extra")
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)]


def test_documented_serve_configs_validate_and_build():
    pytest.importorskip("ray", reason="needs the streamgen[cluster] extra")
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from streamgen.server.cluster.launch import app_builder

    blocks = _yaml_blocks()
    configs = [b for b in blocks if "applications" in b]
    configs += [yaml.safe_load(b["spec"]["serveConfigV2"]) for b in blocks if b.get("kind") == "RayService"]
    assert len(configs) == 2
    for cfg in configs:
        schema = ServeDeploySchema.model_validate(cfg) if hasattr(ServeDeploySchema, "model_validate") \
            else ServeDeploySchema.parse_obj(cfg)
        (app,) = schema.applications
        assert app.import_path == "streamgen.server.cluster.launch:app_builder"
        assert app_builder(app.args) is not None
    with pytest.raises(ValueError, match=r"unknown cluster option\(s\) \['num_gpu'\]"):
        app_builder({"num_gpu": 1})
