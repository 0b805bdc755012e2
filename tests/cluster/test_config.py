"""Cluster configuration and the CLI flag, without starting Ray (and without importing it)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from streamgen.server.cli import build_parser
from streamgen.server.cluster import config as cc


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="replicas=0 must be >= 1"):
        cc.ClusterConfig(replicas=0)
    with pytest.raises(ValueError, match="min_replicas=1 and max_replicas=None"):
        cc.ClusterConfig(min_replicas=1)
    with pytest.raises(ValueError, match="upscale_delay_s=-1"):
        cc.ClusterConfig(upscale_delay_s=-1)
    with pytest.raises(ValueError, match="target_load=1.5"):
        cc.ClusterConfig(target_load=1.5)
    with pytest.raises(ValueError, match=r"unknown cluster option\(s\) \['replica'\]"):
        cc.ClusterConfig.from_dict({"replica": 3})


def test_serve_flags_build_the_cluster_config():
    args = build_parser().parse_args(["--cluster", "auto", "--model", "tiny", "--replicas", "2", "--max-replicas",
                                      "6", "--gpus-per-replica", "1", "--max-queued", "3"])
    cfg = cc.from_args(args, {"model": "tiny"})
    assert (cfg.min_replicas, cfg.max_replicas, cfg.num_gpus, cfg.max_queued) == (2, 6, 1.0, 3)
    assert cfg.autoscaling and cfg.server == {"model": "tiny"}
    assert cc.ClusterConfig.from_dict(cfg.to_dict()) == cfg  # what a Serve YAML's args carry


def test_cluster_options_without_cluster_are_an_error():
    proc = subprocess.run([sys.executable, "-m", "streamgen.server", "--replicas", "3"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "--replicas need --cluster ADDRESS" in proc.stderr


def test_the_single_machine_server_never_imports_ray():
    code = ("import sys; import streamgen.server.cli as c, streamgen.server.app, streamgen.server.cluster.config;"
            "c.settings_from_args(c.build_parser().parse_args(['--model', 'tiny']));"
            "print('ray' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
