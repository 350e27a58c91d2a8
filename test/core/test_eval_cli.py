"""The ``eval`` subcommand end to end on a small NDDS folder written here (dream-compat.md §7), with
oracle keypoints (no network needed) and with a stand-in detector."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from dream_ros import frames
from dream_ros.cli import main
from dream_ros.evaluation import results as R
from dream_ros.evaluation import runner
from dream_ros.robot import RobotModel
from dream_ros.types import Detections

W, H = 640, 480
K = np.array([[520.0, 0.0, 322.0], [0.0, 515.0, 238.0], [0.0, 0.0, 1.0]])


def _look_at_camera_T_base(eye, target=(0.0, 0.0, 0.45)):
    """camera_T_base for an optical-frame camera at ``eye`` (base frame) looking at ``target``."""
    return frames.invert(frames.look_at(eye, target))


def write_ndds(folder: Path, n_frames=6, units="cm", drop_joints=(), offscreen_frame=None, seed=0):
    """A DREAM-style NDDS folder of the Panda; returns the true camera_T_base per frame."""
    import cv2
    robot = RobotModel.load("panda")
    lo, hi = robot.joint_limits()
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    scale = 100.0 if units == "cm" else 1.0
    (folder / "_camera_settings.json").write_text(json.dumps({"camera_settings": [{
        "name": "cam", "intrinsic_settings": {"fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2],
                                              "cy": K[1, 2], "s": 0},
        "captured_image_size": {"width": W, "height": H}}]}))
    poses = []
    for i in range(n_frames):
        q = rng.uniform(0.6 * lo + 0.4 * hi, 0.4 * lo + 0.6 * hi)
        ang = rng.uniform(0, 2 * np.pi)
        T = _look_at_camera_T_base([1.8 * np.cos(ang), 1.8 * np.sin(ang), 0.9])
        if i == offscreen_frame:
            T = _look_at_camera_T_base([1.8 * np.cos(ang), 1.8 * np.sin(ang), 0.9],
                                       target=(3.0 * np.cos(ang + 1.2), 3.0 * np.sin(ang + 1.2), 0.45))
        poses.append(T)
        pb = robot.keypoints_3d(q)
        pc = pb @ T[:3, :3].T + T[:3, 3]
        uv = pc[:, :2] / pc[:, 2:] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
        frame = {
            "camera_data": {"intrinsics": {"fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2],
                                           "cy": K[1, 2]}},
            "objects": [{"class": "panda", "visibility": 1, "location": list(T[:3, 3] * scale),
                         "quaternion_xyzw": list(frames.quaternion_xyzw(T)),
                         "keypoints": [{"name": n, "location": list(p * scale),
                                        "projected_location": list(u)}
                                       for n, p, u in zip(robot.keypoint_names, pc, uv)]}],
        }
        if i not in drop_joints:
            frame["sim_state"] = {"joints": [{"name": n, "position": float(v)}
                                             for n, v in zip(robot.joint_names, q)]
                                  + [{"name": "panda_finger_joint1", "position": 0.02}]}
        name = "%06d" % i
        (folder / (name + ".json")).write_text(json.dumps(frame))
        img = np.full((H, W, 3), 90, np.uint8)
        cv2.imwrite(str(folder / (name + ".rgb.jpg")), img)
    return poses


def _last_json(capsys):
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1]), out


@pytest.fixture(scope="module")
def cm_dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("ndds_cm")
    write_ndds(d, n_frames=6, units="cm", drop_joints=(2,), offscreen_frame=4)
    return d


def test_oracle_perfect_keypoints_give_dreams_ceiling(cm_dataset, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["eval", "--data", str(cm_dataset), "--out", str(out), "--oracle-keypoints"]) == 0
    s, lines = _last_json(capsys)
    assert set(s) == {"frames", "pck_auc", "add_auc", "add_mean_m", "add_median_m",
                      "detected_fraction", "fps"}
    assert s["frames"] == 6
    assert s["pck_auc"] == pytest.approx(0.99925, abs=1e-9)
    assert s["detected_fraction"] == 1.0
    # 5 viable frames found with ADD ~ 0 (auto units: cm -> m); the off-screen frame fails PnP
    assert s["add_median_m"] < 1e-6
    summary = json.loads((out / "summary.json").read_text())
    assert summary["units"] == "cm"
    assert summary["add"]["num_viable"] == 5 and summary["add"]["num_found"] == 5
    assert s["add_auc"] == pytest.approx(0.9999, abs=1e-4)
    assert summary["pnp_points"] == {"fk_base_frame": 5, "dataset_camera_frame": 1}
    assert summary["fk_vs_dataset_rms_m"]["max"] < 1e-6
    assert summary["camera_pose_error"]["translation_median_m"] < 1e-5
    for f in ("results.jsonl", "per_keypoint.csv", "keypoints.csv", "pnp_results.csv", "pck.png",
              "add.png", "error_histograms.png", "by_distance.csv", "by_distance.png"):
        assert (out / f).stat().st_size > 0, f
    assert list(out.glob("overlay_*.png"))
    # every frame lands in one distance bin, binned in metres although the dataset is in cm
    bins = summary["by_camera_distance"]
    assert sum(b["frames"] for b in bins) == 6 and sum(b["viable"] for b in bins) == 5
    assert all(b["max_m"] is not None for b in bins)      # centimetres read as metres: >= 3 m
    assert any(l.startswith("distance  :") for l in lines)
    assert any("panda_link0" in l for l in lines)      # the printed per-keypoint table


def test_results_file_and_dream_csvs(cm_dataset, tmp_path, capsys):
    out = tmp_path / "out"
    main(["eval", "--data", str(cm_dataset), "--out", str(out), "--oracle-keypoints"])
    capsys.readouterr()
    recs = R.read_results(out / "results.jsonl")
    assert [r["frame"] for r in recs] == ["%06d" % i for i in range(6)]
    for r in recs:
        assert {"frame", "keypoints", "camera_T_base", "reprojection_error_px", "status"} <= set(r)
        assert len(r["keypoints"]) == 7
    ok = recs[0]
    assert ok["status"] == "ok" and np.array(ok["camera_T_base"]).shape == (4, 4)
    np.testing.assert_allclose(ok["camera_T_base"], ok["camera_T_base_true"], atol=1e-6)
    assert recs[2]["camera_T_base"] is None and recs[2]["pnp_points_frame"] == "camera"
    assert recs[2]["camera_T_points"] is not None      # no joints: DREAM's camera-frame PnP
    off = recs[4]
    assert off["status"] != "ok" and off["camera_T_base"] is None and off["add_m"] is None
    assert all(v is None for v in off["keypoints"].values())
    with open(out / "keypoints.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][:3] == ["name", "kp0x", "kp0y"] and rows[0][-1] == "kp6y_gt"
    assert float(rows[5][1]) == pytest.approx(-999.999)
    with open(out / "pnp_results.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["pnp_success"] == "True"
    # DREAM's pose is the GT-camera-points -> estimate correction: identity when perfect
    assert float(rows[0]["pose_qw"]) == pytest.approx(1.0, abs=1e-6)
    assert abs(float(rows[0]["pose_x"])) < 1e-6
    assert rows[4]["pnp_success"] == "False" and float(rows[4]["add"]) == pytest.approx(-999.99)


def test_oracle_noise_lowers_pck_and_wrong_units_ruin_add(cm_dataset, tmp_path, capsys):
    main(["eval", "--data", str(cm_dataset), "--out", str(tmp_path / "n"), "--oracle-keypoints",
          "--noise-px", "1"])
    s, _ = _last_json(capsys)
    assert 0.85 < s["pck_auc"] < 0.99
    assert 0 < s["add_mean_m"] < 0.05
    # the cm dataset read as metres: the FK points no longer match the GT points
    main(["eval", "--data", str(cm_dataset), "--out", str(tmp_path / "m"), "--oracle-keypoints",
          "--units", "m"])
    s, lines = _last_json(capsys)
    assert s["add_mean_m"] > 0.5 and s["add_auc"] < 0.3
    assert any(l.startswith("warning") and "--units" in l for l in lines)


def test_metres_dataset_and_limit(tmp_path, capsys):
    d = tmp_path / "ndds_m"
    write_ndds(d, n_frames=4, units="m", seed=3)
    assert main(["eval", "--data", str(d), "--out", str(tmp_path / "o"), "--oracle-keypoints",
                 "--limit", "3", "--overlays", "0"]) == 0
    s, _ = _last_json(capsys)
    assert s["frames"] == 3 and s["add_median_m"] < 1e-6
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["units"] == "m"
    assert not list((tmp_path / "o").glob("overlay_*.png"))


def test_more_keypoints_than_dreams_are_scored_on_dreams(tmp_path, capsys):
    """panda_extended (11 keypoints) on a panda dataset: its 4 extra keypoints are derived and
    used by the pose, but PCK and ADD are taken over DREAM's 7, as for a 7-keypoint model."""
    d = tmp_path / "ndds_m"
    write_ndds(d, n_frames=5, units="m", seed=4)
    out = tmp_path / "ext"
    assert main(["eval", "--data", str(d), "--out", str(out), "--oracle-keypoints", "--robot",
                 "panda_extended", "--noise-px", "3", "--overlays", "0"]) == 0
    s, lines = _last_json(capsys)
    summary = json.loads((out / "summary.json").read_text())
    panda = RobotModel.load("panda")
    assert summary["metric_keypoints"] == panda.keypoint_names
    assert len(summary["per_keypoint"]) == 11 and summary["pck_auc_all_keypoints"] is not None
    assert any(l.startswith("metrics over panda's 7 keypoints") for l in lines)
    recs = R.read_results(out / "results.jsonl")
    gt = np.array([[r["keypoints_gt"][n] for n in panda.keypoint_names] for r in recs])
    pred = np.array([[r["keypoints"][n] for n in panda.keypoint_names] for r in recs], float)
    from dream_ros.evaluation import metrics
    assert s["pck_auc"] == pytest.approx(metrics.keypoint_pck(pred, gt, (W, H)).auc)
    checked = 0
    for r in recs:
        if r["camera_T_base"] is None:
            continue
        q = {j["name"]: j["position"] for j in
             json.loads((d / (r["frame"] + ".json")).read_text())["sim_state"]["joints"]}
        pb = panda.keypoints_3d(q)
        T, T_true = np.array(r["camera_T_base"]), np.array(r["camera_T_base_true"])
        add7 = np.mean(np.linalg.norm((pb @ T[:3, :3].T + T[:3, 3])
                                      - (pb @ T_true[:3, :3].T + T_true[:3, 3]), axis=1))
        assert r["add_m"] == pytest.approx(add7, rel=1e-9)
        checked += 1
    assert checked >= 4


def test_bad_arguments_are_clear_errors(cm_dataset, tmp_path, capsys):
    assert main(["eval", "--data", str(cm_dataset), "--out", str(tmp_path / "x")]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["eval", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "x"),
                 "--oracle-keypoints"]) == 2


class _FakeDetector(object):
    """Detections straight from the labels, in a shuffled name order, one keypoint missed."""

    def __init__(self, frames_by_image, names):
        self.gt = frames_by_image
        self.names = list(reversed(names))

    def detect(self, rgb):
        uv = self.gt.pop(0)[::-1].copy()
        det = np.ones(len(uv), bool)
        det[0] = False                     # the last robot keypoint (panda_hand) is missed
        uv[0] = np.nan
        return Detections(self.names, uv, np.where(det, 1.0, 0.0), det, (W, H))


def test_detector_keypoints_are_reordered_by_name(cm_dataset):
    from dream_ros.evaluation.dataset import load_eval_frames
    robot = RobotModel.load("panda")
    ds = load_eval_frames(str(cm_dataset), robot.keypoint_names, limit=2)
    src = runner.DetectorKeypoints(_FakeDetector([f.uv_gt for f in ds.frames], robot.keypoint_names),
                                   robot.keypoint_names)
    res = runner.evaluate_frames(ds.frames, src, robot, ds.K, ds.image_size, "cm")
    for fr, r in zip(ds.frames, res):
        np.testing.assert_allclose(r.uv_pred[:-1], fr.uv_gt[:-1])
        assert np.all(np.isnan(r.uv_pred[-1]))
        assert r.estimate.ok and r.add_m < 1e-6


def test_model_path_with_a_random_network_counts_missed_keypoints(cm_dataset, tmp_path, capsys):
    """A network that finds nothing: every in-frame keypoint a miss, every viable frame failed."""
    import torch
    from dream_ros.network.model_file import ModelConfig, save_model
    robot = RobotModel.load("panda")
    cfg = ModelConfig.for_ours("panda", robot.keypoint_names,
                               [k.link for k in robot.config.keypoints], arch="dream_tiny_s4")
    net = cfg.build_network()
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()                      # all-zero belief maps: no peak anywhere
    model = save_model(tmp_path / "zero.pt", net, cfg)
    out = tmp_path / "out"
    assert main(["eval", "--model", str(model), "--data", str(cm_dataset), "--out", str(out),
                 "--backend", "torch", "--overlays", "1"]) == 0
    s, _ = _last_json(capsys)
    assert s["frames"] == 6 and s["detected_fraction"] == 0.0
    assert s["pck_auc"] == 0.0 and s["add_auc"] == 0.0 and s["add_mean_m"] is None
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "model" and summary["add"]["num_failed_viable"] == 5
    recs = R.read_results(out / "results.jsonl")
    assert all(r["status"].startswith("too_few_points") for r in recs)
    assert len(list(out.glob("overlay_*.png"))) == 1
