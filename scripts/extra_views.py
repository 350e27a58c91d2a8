#!/usr/bin/env python3
"""Would more views of the same image place the keypoints better? Three test-time experiments
with a shipped model on a rendered set (results in docs/evaluation.md, session 21):

- ``flip``: the detector on the mirrored image too (the keypoints keep their names under a
  horizontal flip). Full pipeline PCK / ADD AUC for the image alone, the mirror alone, and the two
  averaged where they agree within 4 px.
- ``zoom-out``: close frames only (mean keypoint distance below ``--max-distance``): the image
  shrunk into the middle of a grey canvas FACTOR times its size, so the robot is smaller in the
  input. Per-keypoint errors of one network pass.
- ``windows``: close frames only: a 3x3 grid of 400x300 windows of the raw image, each keypoint
  from the window nearest its first-pass position, or the median of the windows holding it
  well inside and the whole image. Per-keypoint errors against one pass on the whole image.

    python scripts/extra_views.py flip DATA [--limit N]
    python scripts/extra_views.py zoom-out DATA [--factors 1.3 1.6 2.0]
    python scripts/extra_views.py windows DATA
"""
import argparse
import sys

import numpy as np

from dream_ros.evaluation import metrics
from dream_ros.evaluation.dataset import load_eval_frames
from dream_ros.evaluation.runner import (DetectorKeypoints, evaluate_frames, load_rgb,
                                          metric_keypoints, resolve_units)
from dream_ros.network.detector import KeypointDetector
from dream_ros.network.preprocess import PAD_VALUE
from dream_ros.robot import RobotModel

AGREE_PX = 4.0           # flip: both views' detections averaged when this close
WINDOW = (400, 300)      # windows: raw pixels per window (1:1 at the 400x300 input)
INSIDE = 0.35            # windows: a keypoint within this fraction of a window's size of its centre


class Setup:
    def __init__(self, data: str, model: str, zoom: bool, limit=None):
        self.detector = KeypointDetector(model, num_threads=2, zoom=None if zoom else False)
        self.robot = RobotModel.load(self.detector.config.robot)
        self.names = list(self.robot.keypoint_names)
        self.metric = [self.names.index(n) for n in metric_keypoints(self.robot)]
        self.ds = load_eval_frames(data, self.names, robot_name=self.robot.name, limit=limit,
                                   derive_with=self.robot)
        self.keypoints = DetectorKeypoints(self.detector, self.names)

    def uv(self, frame, rgb):
        return self.keypoints(frame, rgb)[0]

    def close_frames(self, max_distance: float):
        for fr in self.ds.frames:
            if np.linalg.norm(np.mean(fr.points_camera, axis=0)) < max_distance:
                yield fr, load_rgb(fr.image_path)

    def errors(self, fr, uv) -> np.ndarray:
        """Errors of the metric keypoints inside the image (as PCK counts them); inf where not
        found."""
        gt = np.asarray(fr.uv_gt, float)
        inside = metrics.in_frame_mask(gt, self.ds.image_size)      # PCK's test
        e = np.linalg.norm(uv - gt, axis=1)
        e[~np.isfinite(e)] = np.inf
        keep = np.zeros(len(e), bool)
        keep[self.metric] = True
        return e[keep & inside]


def report(label: str, errors) -> None:
    e = np.concatenate(errors)
    print("%-22s %4d keypoints in %3d frames: median %.2f px, < 5 px %.2f, < 10 px %.2f, "
          ">= 20 px or missing %.2f" % (label, len(e), len(errors), np.median(e),
                                        np.mean(e < 5), np.mean(e < 10), np.mean(e >= 20)))


def flip(s: Setup) -> None:
    class Views:
        needs_image = True

        def __init__(self, mode):
            self.mode = mode

        def __call__(self, fr, rgb):
            uv, scores, cands, sigma = s.keypoints(fr, rgb)
            if self.mode == "image":
                return uv, scores, cands, sigma
            mirrored = s.keypoints(fr, np.ascontiguousarray(rgb[:, ::-1]))
            uvm = mirrored[0].copy()
            uvm[:, 0] = rgb.shape[1] - 1 - uvm[:, 0]
            if self.mode == "mirror":
                return uvm, mirrored[1], None, mirrored[3]
            agree = np.linalg.norm(uv - uvm, axis=1) < AGREE_PX      # False where either is NaN
            out = uv.copy()
            out[agree] = (uv[agree] + uvm[agree]) / 2.0
            return out, scores, cands, sigma

    units = resolve_units("auto", s.ds.frames, s.robot)
    for mode in ("image", "mirror", "averaged"):
        res = evaluate_frames(s.ds.frames, Views(mode), s.robot, s.ds.K, s.ds.image_size, units,
                              metric_index=s.metric)
        km = metrics.keypoint_pck(np.stack([r.uv_pred for r in res])[:, s.metric],
                                  np.stack([r.truth.uv for r in res])[:, s.metric],
                                  s.ds.image_size)
        am = metrics.add_metrics([r.add_m for r in res], [r.viable for r in res])
        print("%-9s PCK AUC %.4f  ADD AUC %.4f  median %.2f px" % (mode, km.auc, am.auc,
                                                                   km.median_px), flush=True)


def zoom_out(s: Setup, max_distance: float, factors) -> None:
    errors = {f: [] for f in [1.0] + list(factors)}
    for fr, rgb in s.close_frames(max_distance):
        h, w = rgb.shape[:2]
        for f in errors:
            cw, ch = int(round(w * f)), int(round(h * f))
            ox, oy = (cw - w) // 2, (ch - h) // 2
            canvas = np.full((ch, cw, 3), PAD_VALUE, np.uint8)
            canvas[oy:oy + h, ox:ox + w] = rgb
            errors[f].append(s.errors(fr, s.uv(fr, canvas) - (ox, oy)))
    for f, e in errors.items():
        report("canvas x%.2f" % f, e)


def windows(s: Setup, max_distance: float) -> None:
    cw, ch = WINDOW
    errors = {"whole image": [], "nearest window": [], "median of windows": []}
    for fr, rgb in s.close_frames(max_distance):
        h, w = rgb.shape[:2]
        whole = s.uv(fr, rgb)
        views = []
        for x0 in np.linspace(0, w - cw, 3).astype(int):
            for y0 in np.linspace(0, h - ch, 3).astype(int):
                uv = s.uv(fr, np.ascontiguousarray(rgb[y0:y0 + ch, x0:x0 + cw])) + (x0, y0)
                off_centre = np.maximum(np.abs(whole[:, 0] - x0 - cw / 2) / cw,
                                        np.abs(whole[:, 1] - y0 - ch / 2) / ch)
                views.append((uv, off_centre))
        nearest, pooled = whole.copy(), whole.copy()
        for k in np.flatnonzero(np.isfinite(whole[:, 0])):
            best = min(views, key=lambda v: v[1][k])[0][k]
            if np.isfinite(best[0]):
                nearest[k] = best
            held = [v[0][k] for v in views if v[1][k] < INSIDE and np.isfinite(v[0][k, 0])]
            pooled[k] = np.median(np.array(held + [whole[k]]), axis=0)
        for key, uv in zip(errors, (whole, nearest, pooled)):
            errors[key].append(s.errors(fr, uv))
    for key, e in errors.items():
        report(key, e)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("experiment", choices=("flip", "zoom-out", "windows"))
    p.add_argument("data", help="an NDDS set (640x480 renders)")
    p.add_argument("--model", default="models/panda_default.pt")
    p.add_argument("--limit", type=int, default=None, help="flip: first N frames")
    p.add_argument("--max-distance", type=float, default=1.0,
                   help="zoom-out, windows: frames whose keypoints are nearer, metres")
    p.add_argument("--factors", type=float, nargs="+", default=[1.3, 1.6, 2.0],
                   help="zoom-out: canvas sizes over the image's")
    args = p.parse_args(argv)
    # the view experiments compare single network passes; flip runs the full detector
    s = Setup(args.data, args.model, zoom=args.experiment == "flip", limit=args.limit)
    if args.experiment == "flip":
        flip(s)
    elif args.experiment == "zoom-out":
        zoom_out(s, args.max_distance, args.factors)
    else:
        windows(s, args.max_distance)
    return 0


if __name__ == "__main__":
    sys.exit(main())
