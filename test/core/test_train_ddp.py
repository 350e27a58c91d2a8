"""The train command under torchrun: 2 CPU processes, gloo backend, a few DistributedDataParallel steps."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

TINY = Path(__file__).resolve().parents[1] / "data" / "panda_tiny"
SRC = Path(__file__).resolve().parents[2] / "src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not TINY.is_dir(), reason="tiny rendered dataset missing")
def test_two_process_gloo_ddp_steps(tmp_path):
    import torch
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", NO_ALBUMENTATIONS_UPDATE="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", "--master_port=%d" % _free_port(),
           "-m", "dream_ros", "train", "--data", str(TINY), "--robot", "panda",
           "--arch", "dream_tiny_s4", "--out", str(run), "--input-size", "160", "128",
           "--batch-size", "2", "--epoch-images", "4", "--max-steps", "3", "--workers", "0",
           "--threads", "1", "--val-fraction", "0", "--min-frames", "1", "--augment", "strong",
           "--no-progress", "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "world 2" in proc.stdout
    state = torch.load(str(run / "last.pt"), map_location="cpu", weights_only=False)
    # 3 steps x 2 processes x batch 2: the counters count images over all processes
    assert state["counters"]["steps"] == 3 and state["counters"]["images_seen"] == 12
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
