#!/usr/bin/env python3
"""How much ADD the structure of the keypoint errors costs, from an ``eval`` output directory.

Replays the saved detections (results.jsonl: the peaks the pose chose, their heights) through the
pipeline's robust PnP without running the network, and reports:
- the replay itself (it should match the saved ADD AUC: a check that the replay is faithful);
- the contraction of the detections about their centroid against the truth, by camera distance
  (a least-squares scale over the keypoints within 8 px; below 1: the robot looks smaller, so the
  pose lands too far away), with the median depth error of the saved poses;
- ADD AUC with each frame's detections rescaled by that frame's true scale (an upper bound on what
  any contraction correction could give), and with a fixed radial push of ``--push`` pixels;
- ADD AUC with each error's direction drawn at random and its length kept: what correlated
  directions cost, against the lengths alone;
- ADD AUC with only the keypoints within ``--inlier-px`` of the truth (a perfect outlier test),
  and how many of the frames with a pose more than 0.1 m off (or none, though viable) it saves.

    python scripts/keypoint_error_structure.py EVAL_OUT [--model M] [--push 0.1 0.2 0.3]
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from dream_ros.evaluation import metrics
from dream_ros.evaluation.dataset import load_eval_frames
from dream_ros.evaluation.ground_truth import frame_truth
from dream_ros.evaluation.results import read_results
from dream_ros.evaluation.runner import fk_points, metric_keypoints, resolve_units
from dream_ros.network.detector import detection_sigma_px
from dream_ros.network.model_file import load_model
from dream_ros.pnp import solve_pnp
from dream_ros.robot import RobotModel

CLOSE_PX = 8.0                                   # keypoints that enter the scale fit
DISTANCE_BINS_M = ((0.0, 1.0), (1.0, 1.5), (1.5, 2.0), (2.0, 2.5), (2.5, np.inf))


def true_scale(uv, gt, found):
    """Least-squares scale of the found detections about their centroid against the truth (None
    with fewer than 3 keypoints within CLOSE_PX)."""
    near = found & (np.linalg.norm(uv - gt, axis=1) < CLOSE_PX)
    if near.sum() < 3:
        return None
    p, g = uv[near] - uv[near].mean(0), gt[near] - gt[near].mean(0)
    return float((p * g).sum() / (g * g).sum())


class Replay:
    def __init__(self, out_dir: Path, model=None):
        """``model``: the file the detections came from, for the pose's per-keypoint weights
        (None: summary.json's; an oracle-keypoints eval has none and its pose weighs none)."""
        summary = json.loads((out_dir / "summary.json").read_text())
        model = model or summary.get("model")
        sigma_px = load_model(model)[1].keypoint_sigma_px if model else None
        self.robot = RobotModel.load(summary["robot"])
        names = list(self.robot.keypoint_names)
        self.metric_mask = np.isin(names, metric_keypoints(self.robot))
        ds = load_eval_frames(summary["data"], names, robot_name=self.robot.name,
                              derive_with=self.robot)
        units = resolve_units(summary.get("units") or "auto", ds.frames, self.robot)
        saved = {row["frame"]: row for row in read_results(out_dir / "results.jsonl")}
        self.frames = []
        for fr in ds.frames:
            row = saved[fr.name]
            uv = np.array([row["keypoints"].get(n) or (np.nan, np.nan) for n in names], float)
            saved_scores = row.get("scores") or {}
            scores = np.array([np.nan if saved_scores.get(n) is None else saved_scores[n]
                               for n in names], float)
            found = np.all(np.isfinite(uv), axis=1)
            truth = frame_truth(fr.uv_gt, fr.points_camera, units, fk_points(self.robot, fr.joints))
            self.frames.append(dict(
                uv=uv, found=found, truth=truth, row=row, viable=bool(row["viable"]),
                sigma=detection_sigma_px(sigma_px, scores, found) if sigma_px else None,
                K=fr.K if fr.K is not None else ds.K))

    def add_auc(self, adjust=None) -> float:
        """ADD AUC with each frame's detections passed through ``adjust(frame) -> uv``."""
        adds = self.add_per_frame(adjust, self.frames)
        return metrics.add_metrics(adds, [fr["viable"] for fr in self.frames]).auc

    def add_per_frame(self, adjust, frames):
        """ADD of each of ``frames`` (NaN where PnP fails), detections through ``adjust``."""
        adds = []
        for fr in frames:
            uv = fr["uv"] if adjust is None else adjust(fr)
            est = solve_pnp(fr["truth"].pnp_points, uv, fr["K"], robust=True,
                            point_sigma_px=fr["sigma"])
            adds.append(metrics.add_error(est.camera_T_base if est.ok else None,
                                          fr["truth"].pnp_points, fr["truth"].points_camera,
                                          used=np.all(np.isfinite(uv), axis=1) & self.metric_mask))
        return adds


def scaled(fr, factor_of):
    """The frame's detections scaled about their centroid by ``factor_of(frame, rms radius)``."""
    uv, found = fr["uv"].copy(), fr["found"]
    if found.sum() < 2:
        return uv
    centre = uv[found].mean(0)
    radius = np.sqrt(((uv[found] - centre) ** 2).sum(1).mean())
    uv[found] = centre + (uv[found] - centre) * factor_of(fr, radius)
    return uv


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("eval_out", type=Path, help="an `eval --out` directory")
    p.add_argument("--model", default=None,
                   help="the model the detections came from, for its per-keypoint sigmas "
                   "(default: the one summary.json names)")
    p.add_argument("--push", type=float, nargs="*", default=[0.1, 0.2, 0.3],
                   help="fixed radial pushes to try, pixels")
    p.add_argument("--inlier-px", type=float, default=10.0,
                   help="the perfect outlier test keeps keypoints this close to the truth")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    summary = json.loads((args.eval_out / "summary.json").read_text())
    replay = Replay(args.eval_out, args.model)

    print("saved ADD AUC %.4f, replayed %.4f" % (summary["add_auc"], replay.add_auc()))
    print("\ncontraction by camera distance (mean keypoint distance; frames with a pose):")
    print("distance    frames  scale median  depth error median  ADD median")
    for lo, hi in DISTANCE_BINS_M:
        rows = []
        for fr in replay.frames:
            T, T_true = fr["row"].get("camera_T_base"), fr["row"].get("camera_T_base_true")
            dist = float(np.linalg.norm(fr["truth"].points_camera.mean(axis=0)))
            s = true_scale(fr["uv"], fr["truth"].uv, fr["found"])
            if T is None or T_true is None or s is None or not lo <= dist < hi:
                continue
            rows.append((s, np.array(T)[2, 3] - np.array(T_true)[2, 3], fr["row"]["add_m"]))
        if rows:
            r = np.array(rows)
            print("%-10s %7d  %12.4f  %+15.1f mm  %7.1f mm" % (
                "%.1f-%.1f m" % (lo, hi) if np.isfinite(hi) else ">= %.1f m" % lo, len(r),
                np.median(r[:, 0]), 1000 * np.median(r[:, 1]), 1000 * np.median(r[:, 2])))

    def undo_true_scale(fr, radius):
        s = true_scale(fr["uv"], fr["truth"].uv, fr["found"])
        return 1.0 if s is None else 1.0 / s
    print("\nADD AUC, each frame rescaled by its true scale (upper bound): %.4f"
          % replay.add_auc(lambda fr: scaled(fr, undo_true_scale)))
    for push in args.push:
        print("ADD AUC, detections pushed %.2f px away from their centroid: %.4f"
              % (push, replay.add_auc(lambda fr: scaled(fr, lambda f, r: 1.0 + push / r))))

    rng = np.random.default_rng(args.seed)

    def random_directions(fr):
        uv, found, gt = fr["uv"].copy(), fr["found"], fr["truth"].uv
        length = np.linalg.norm(uv[found] - gt[found], axis=1)
        angle = rng.uniform(0.0, 2 * np.pi, len(length))
        uv[found] = gt[found] + length[:, None] * np.column_stack([np.cos(angle), np.sin(angle)])
        return uv
    print("ADD AUC, error directions drawn at random, lengths kept: %.4f"
          % replay.add_auc(random_directions))

    def true_inliers(fr):
        uv = fr["uv"].copy()
        uv[~(np.linalg.norm(uv - fr["truth"].uv, axis=1) < args.inlier_px)] = np.nan
        return uv

    def pose_wrong(fr):
        add = fr["row"]["add_m"]
        return add > metrics.ADD_MAX_M if add is not None else fr["viable"]
    wrong = [fr for fr in replay.frames if pose_wrong(fr)]
    saved = replay.add_per_frame(true_inliers, wrong)
    print("ADD AUC, only the keypoints within %g px of the truth: %.4f; of the %d frames with a "
          "pose > %g m off or none, %d come within it"
          % (args.inlier_px, replay.add_auc(true_inliers), len(wrong), metrics.ADD_MAX_M,
             int(np.sum(np.array(saved) <= metrics.ADD_MAX_M))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
