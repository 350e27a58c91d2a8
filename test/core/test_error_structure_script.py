"""scripts/keypoint_error_structure.py: its replay of an eval output gives the eval's ADD back,
and its scale fit finds a contraction put in by hand."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from dream_ros.cli import main
from test_eval_cli import write_ndds

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "keypoint_error_structure.py"


@pytest.fixture(scope="module")
def structure():
    spec = importlib.util.spec_from_file_location("keypoint_error_structure", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_replay_gives_the_saved_add_back_and_the_report_runs(structure, tmp_path, capsys):
    data, out = tmp_path / "ndds", tmp_path / "eval"
    write_ndds(data, n_frames=6, units="m", seed=5)
    assert main(["eval", "--data", str(data), "--out", str(out), "--oracle-keypoints",
                 "--robot", "panda_extended", "--noise-px", "3", "--overlays", "0"]) == 0
    saved = json.loads((out / "summary.json").read_text())["add_auc"]
    replay = structure.Replay(out)
    assert len(replay.frames) == 6
    assert replay.add_auc() == pytest.approx(saved, abs=1e-9)
    # without the detections' errors the pose is exact
    assert replay.add_auc(lambda fr: fr["truth"].uv) > 0.99
    capsys.readouterr()
    assert structure.main([str(out), "--push", "0.2"]) == 0
    report = capsys.readouterr().out
    assert "saved ADD AUC %.4f, replayed %.4f" % (saved, saved) in report
    assert "pushed 0.20 px" in report and "within 10 px of the truth" in report


def test_true_scale_finds_a_contraction(structure):
    rng = np.random.default_rng(0)
    gt = rng.uniform(100, 300, (7, 2))
    uv = gt.mean(0) + 0.98 * (gt - gt.mean(0))
    found = np.ones(7, bool)
    assert structure.true_scale(uv, gt, found) == pytest.approx(0.98)
    found[:5] = False                 # fewer than 3 keypoints to fit
    assert structure.true_scale(uv, gt, found) is None
