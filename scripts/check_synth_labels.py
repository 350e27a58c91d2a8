#!/usr/bin/env python
"""Label accuracy of the renderer: marker spheres at the keypoint frames vs projected_location.

    python scripts/check_synth_labels.py --robot panda --poses 30 --width 640 --height 480

Random joints, cameras and intrinsics (fx != fy, off-centre principal point); a marker counts when
it is fully visible (its pixel area is at least 80% of the projected disc, inside the image,
no other marker next to it).
Prints mean / max centroid error in pixels.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--robot", default="panda")
    ap.add_argument("--poses", type=int, default=30)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    args = ap.parse_args()
    import mujoco
    import numpy as np
    from dream_ros.frames import invert
    from dream_ros.synth.randomize import look_at
    from dream_ros.synth.render import RobotRenderer, intrinsics_from_fov
    W, H = args.width, args.height
    r = RobotRenderer(args.robot, W, H, markers=True)
    sc = r.scene
    lo, hi = sc.joint_limits()
    gids = [mujoco.mj_name2id(sc.model, mujoco.mjtObj.mjOBJ_GEOM, "marker:" + n) for n in sc.config.keypoint_names]
    rng = np.random.default_rng(0)
    errs = []
    for _ in range(args.poses):
        joints = dict(zip(sc.joint_names, rng.uniform(lo, hi)))
        K = intrinsics_from_fov(W, H, rng.uniform(40, 70))
        K[0, 0] *= rng.uniform(0.95, 1.05)
        K[:2, 2] += rng.uniform(-0.05, 0.05, 2) * [W, H]
        az, el, rad = rng.uniform(-np.pi, np.pi), rng.uniform(0, 1.0), rng.uniform(1.2, 2.0)
        target = np.array([0, 0, 0.45]) + rng.uniform(-0.15, 0.15, 3)
        cam = target + rad * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        cTb = invert(look_at(cam, target, rng.uniform(-0.3, 0.3))) @ sc.world_T_base()
        _, lab = r.render(joints, cTb, K, return_labels=True)
        geom = r.render_markers(joints, cTb, K)
        for k, g in enumerate(gids):
            vs, us = np.nonzero(geom == g)
            area = np.pi * (0.012 * K[1, 1] / lab.xyz[k, 2]) ** 2
            if not lab.in_frame[k] or len(us) < max(10, 0.8 * area) or us.min() == 0 or vs.min() == 0 \
                    or us.max() == W - 1 or vs.max() == H - 1:
                continue
            box = geom[max(vs.min() - 2, 0):vs.max() + 3, max(us.min() - 2, 0):us.max() + 3]
            if np.any((box >= 0) & (box != g)):
                continue    # another marker touches this one: its centroid would be biased
            errs.append(np.hypot(us.mean() - lab.uv[k, 0], vs.mean() - lab.uv[k, 1]))
    errs = np.array(errs)
    print("%s %dx%d: %d markers, centroid error mean %.3f px, median %.3f, max %.3f"
          % (args.robot, W, H, len(errs), errs.mean(), np.median(errs), errs.max()))


if __name__ == "__main__":
    main()
