#!/usr/bin/env python
"""What keypoint accuracy the #6 targets need: ground-truth keypoints plus Gaussian noise (per
coordinate, as `eval --oracle-keypoints --noise-px`) through the pipeline's robust PnP, on an
NDDS test set, scored by DREAM's PCK AUC and ADD AUC. A second ADD column gives PnP the 11
keypoints of config/robots/panda_extended.yaml (DREAM's 7, then 4 points spread along the arm),
noised alike; ADD is still measured on the 7 standard keypoints. Only viable frames (>= 4 of
the 7 strictly inside the image) count as found here: DREAM's curve also counts found non-viable
frames, which would let the 11-keypoint column pass 1.

    python scripts/oracle_targets.py [DATA] [noise px ...]
    (defaults: /work/data/panda_test_640, 0.5 1 1.5 2 2.5 3 4)
"""
import sys

import numpy as np

from dream_ros.evaluation import metrics
from dream_ros.evaluation.dataset import load_eval_frames
from dream_ros.evaluation.ground_truth import fit_rigid_transform, frame_truth
from dream_ros.evaluation.runner import fk_points
from dream_ros.pnp import solve_pnp
from dream_ros.robot import RobotModel
from dream_ros.visualize import project

DATA = sys.argv[1] if len(sys.argv) > 1 else "/work/data/panda_test_640"
NOISE = [float(v) for v in sys.argv[2:]] or [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0]

robot = RobotModel.load("panda")
extended = RobotModel.load("panda_extended")       # the same 7 first, then 4 more
ds = load_eval_frames(DATA, robot.keypoint_names, robot_name=robot.name)
scenes = []     # (K, 3D points in the base frame (11), their true pixels, truth)
for fr in ds.frames:
    truth = frame_truth(fr.uv_gt, fr.points_camera, "m", fk_points(robot, fr.joints))
    camera_T_base = fit_rigid_transform(truth.pnp_points, truth.points_camera)[0]
    p3 = extended.keypoints_3d(fr.joints)
    assert np.allclose(p3[:7], truth.pnp_points)
    scenes.append((fr.K, p3, project(p3, camera_T_base, fr.K), truth))
viable = np.array([np.count_nonzero(metrics.in_frame_mask(t.uv, ds.image_size, strict=True))
                   >= metrics.MIN_VIABLE_KEYPOINTS for _, _, _, t in scenes])

print("%s: %d frames, %d viable" % (DATA, len(scenes), viable.sum()))
print("| noise (px, per coordinate) | PCK AUC | ADD AUC, 7 keypoints | ADD AUC, 11 keypoints |")
print("|---|---|---|---|")
for noise in NOISE:
    rng = np.random.default_rng(0)
    uv_pred, uv_gt, add = [], [], {7: [], 11: []}
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
    print("| %.1f | %.3f | %.3f | %.3f |" % (
        noise, pck, metrics.add_metrics(add[7], viable).auc, metrics.add_metrics(add[11], viable).auc))
