#!/usr/bin/env python
"""Static-mode calibration of a simulated camera, without ROS: renders N frames of sim_camera's
trajectory, runs the Calibrator (real detector) in static mode and prints the per-frame outcomes,
the keypoint pixel errors (per keypoint: median error and mean offset, i.e. the detector's bias
in this view, which more frames do not average out) and the final estimate's error against the
simulated truth.

    python scripts/static_sim_eval.py [model] [width] [frames] [zoom views] [guided zoom 0/1]
    (defaults: panda 640 80, and the node's static-mode zoom views and guided zoom)
"""
import sys
from collections import Counter

import numpy as np
import torch

torch.set_num_threads(1)
from dream_ros import frames, visualize  # noqa: E402
from dream_ros.calibration import Calibrator  # noqa: E402
from dream_ros.network.model_file import robot_for_model  # noqa: E402
from dream_ros.ros.node import PARAMETERS, build_detector, zoom_views_for  # noqa: E402
from dream_ros.ros.sim_camera import SimCamera  # noqa: E402

model = sys.argv[1] if len(sys.argv) > 1 else "panda"
W = int(sys.argv[2]) if len(sys.argv) > 2 else 640
N = int(sys.argv[3]) if len(sys.argv) > 3 else 80
VIEWS = zoom_views_for("static", int(sys.argv[4]) if len(sys.argv) > 4 else 0)
GUIDED = bool(int(sys.argv[5])) if len(sys.argv) > 5 else PARAMETERS["guided_zoom"][0]
sim = SimCamera(width=W, height=W * 3 // 4, camera_position=(1.3, 0.6, 0.8), look_at=(0.1, 0, 0.45))
detector = build_detector(model, sim.robot, "cpu", "auto", 1, VIEWS)
# the model's keypoints (an 11-keypoint panda_extended model on the simulated panda)
robot = robot_for_model(model, detector.config, sim.robot, "pass a Panda model")
cal = Calibrator(robot, detector, mode="static", guided_zoom=GUIDED)
outcomes, errs, guided_frames = Counter(), [], 0
offsets = {name: [] for name in robot.keypoint_names}
for i in range(N):
    j = sim.joints(i * 0.25)
    det, est = cal.process(sim.render(j), j, sim.K)
    truth_uv = visualize.project(robot.keypoints_3d(j), sim.camera_T_base, sim.K)
    errs += list(np.linalg.norm(det.uv - truth_uv, axis=1)[det.detected])
    for k, name in enumerate(robot.keypoint_names):
        if det.detected[k]:
            offsets[name].append(det.uv[k] - truth_uv[k])
    outcomes[est.extras.get("stage", est.status)] += 1
    guided_frames += int(est.extras.get("single_frame", est).extras.get("guided", False))
print("frame outcomes:", dict(outcomes),
      "; guided zoom in %d of %d frames" % (guided_frames, N))
print("keypoints: %d detected, median error %.1f px" % (len(errs), np.median(errs) if errs else np.nan))
for name, d in offsets.items():
    d = np.array(d).reshape(-1, 2)
    print("  %-14s %3d found  median %5.1f px  mean offset %+5.1f %+5.1f px"
          % (name, len(d), np.median(np.linalg.norm(d, axis=1)) if len(d) else np.nan,
             *(d.mean(axis=0) if len(d) else (np.nan, np.nan))))
e = cal.estimate
if e is None:
    print("no accepted estimate")
else:
    t, r = frames.pose_error(e.camera_T_base, sim.camera_T_base)
    print("estimate (%s, %d frames): %.1f mm, %.2f deg from the truth"
          % (e.extras.get("stage"), e.frames_used, 1000 * t, r))
