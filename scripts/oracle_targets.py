#!/usr/bin/env python
"""What keypoint accuracy the #6 targets need: ground-truth keypoints plus Gaussian noise (per
coordinate, as `eval --oracle-keypoints --noise-px`) through the pipeline's robust PnP, on an
NDDS test set, scored by DREAM's PCK AUC and ADD AUC. One ADD column per keypoint config: PnP
gets that config's keypoints (each one lists DREAM's 7 first, then more), noised alike; ADD is
always measured on the 7 standard keypoints. Only viable frames (>= 4 of the 7 strictly inside
the image) count as found here: DREAM's curve also counts found non-viable frames, which would
let the columns with more keypoints pass 1.

    python scripts/oracle_targets.py [--data DIR] [--configs NAME ...] [--noise PX ...]
    (defaults: /work/data/panda_test_640; panda panda_extended panda_dense; 0.5 1 1.5 2 2.5 3 4)
"""
import argparse

import numpy as np

from dream_ros.evaluation import metrics
from dream_ros.evaluation.dataset import load_eval_frames
from dream_ros.evaluation.ground_truth import fit_rigid_transform, frame_truth
from dream_ros.evaluation.runner import fk_points
from dream_ros.pnp import solve_pnp
from dream_ros.robot import RobotModel
from dream_ros.visualize import project

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--data", default="/work/data/panda_test_640")
parser.add_argument("--configs", nargs="+", default=["panda", "panda_extended", "panda_dense"])
parser.add_argument("--noise", nargs="+", type=float, default=[0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0])
args = parser.parse_args()

robot = RobotModel.load("panda")
configs = [RobotModel.load(name) for name in args.configs]
widest = max(configs, key=lambda c: c.num_keypoints)
for c in configs:
    if (c.keypoint_names[:7] != robot.keypoint_names
            or c.keypoint_names != widest.keypoint_names[:c.num_keypoints]):
        raise SystemExit("config %s must list panda's 7 keypoints first and be a prefix of %s"
                         % (c.name, widest.name))
ds = load_eval_frames(args.data, robot.keypoint_names, robot_name=robot.name)
scenes = []     # (K, 3D points in the base frame (widest config), their true pixels, truth)
for fr in ds.frames:
    truth = frame_truth(fr.uv_gt, fr.points_camera, "m", fk_points(robot, fr.joints))
    camera_T_base = fit_rigid_transform(truth.pnp_points, truth.points_camera)[0]
    p3 = widest.keypoints_3d(fr.joints)
    assert np.allclose(p3[:7], truth.pnp_points)
    scenes.append((fr.K, p3, project(p3, camera_T_base, fr.K), truth))
viable = np.array([np.count_nonzero(metrics.in_frame_mask(t.uv, ds.image_size, strict=True))
                   >= metrics.MIN_VIABLE_KEYPOINTS for _, _, _, t in scenes])

print("%s: %d frames, %d viable" % (args.data, len(scenes), viable.sum()))
print("| noise (px, per coordinate) | PCK AUC | "
      + " | ".join("ADD AUC, %s (%d)" % (c.name, c.num_keypoints) for c in configs) + " |")
print("|---|---|" + "---|" * len(configs))
for noise in args.noise:
    rng = np.random.default_rng(0)
    uv_pred, uv_gt, add = [], [], {c.num_keypoints: [] for c in configs}
    for (K, p3, uv_true, truth), frame_viable in zip(scenes, viable):
        uv = uv_true + rng.normal(0.0, noise, uv_true.shape)
        uv[~metrics.in_frame_mask(uv_true, ds.image_size)] = np.nan
        uv_pred.append(uv[:7])
        uv_gt.append(truth.uv)
        for n in add:
            if not frame_viable:
                add[n].append(np.nan)
                continue
            est = solve_pnp(p3[:n], uv[:n], K)
            add[n].append(metrics.add_error(est.camera_T_base if est.ok else None,
                                            truth.pnp_points, truth.points_camera,
                                            used=np.all(np.isfinite(uv[:7]), axis=1)))
    pck = metrics.keypoint_pck(np.array(uv_pred), np.array(uv_gt), ds.image_size).auc
    print("| %.1f | %.3f | %s |" % (noise, pck, " | ".join(
        "%.3f" % metrics.add_metrics(add[c.num_keypoints], viable).auc for c in configs)), flush=True)
