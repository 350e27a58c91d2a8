"""Evaluation output files, each written atomically (temp file in the same dir, then os.replace).

- ``results.jsonl``: one JSON object per frame, the per-frame results format shared with the
  offline ``calibrate`` command ({"frame", "keypoints", "camera_T_base", "reprojection_error_px",
  "status"} plus evaluation fields).
- DREAM-style ``keypoints.csv`` and ``pnp_results.csv`` (DREAM's columns and -999 sentinels).
- ``summary.json`` and the per-keypoint error table (CSV).
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

import numpy as np

from ..frames import quaternion_xyzw

DREAM_MISSING_KP = -999.999
DREAM_FAILED_POSE = -999.99


@contextlib.contextmanager
def atomic_path(path, suffix: str = ""):
    """Yield a temp path beside ``path``; on success move it into place, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=suffix or path.suffix,
                               dir=str(path.parent))
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, str(path))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _clean(x):
    """JSON-safe: numpy to Python, NaN/inf to null."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer, int)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    return x


def write_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(_clean(obj), f, indent=2)
            f.write("\n")


def to_json_line(obj) -> str:
    return json.dumps(_clean(obj), separators=(",", ":"))


class ResultsWriter(object):
    """Streams per-frame objects to a temp file; ``close()`` moves it to ``path``."""

    def __init__(self, path):
        self.path = Path(path)
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self._f = open(self._tmp, "w")
        self.count = 0

    def write(self, record: dict) -> None:
        self._f.write(to_json_line(record) + "\n")
        self.count += 1

    def close(self, ok: bool = True) -> None:
        if self._f.closed:
            return
        self._f.close()
        if ok:
            self._ctx.__exit__(None, None, None)
        else:
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close(True)
        else:
            with contextlib.suppress(RuntimeError):
                self.close(False)
        return False


def read_results(path) -> List[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_table_csv(path, rows: Sequence[dict], columns: Optional[Sequence[str]] = None) -> None:
    columns = list(columns or (rows[0].keys() if rows else []))
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(columns)
            for r in rows:
                w.writerow(["" if r.get(c) is None else _fmt(r.get(c)) for c in columns])


def _fmt(v):
    return "%.6g" % v if isinstance(v, float) else v


def write_dream_keypoints_csv(path, frame_names: Sequence[str], uv_pred: np.ndarray,
                              uv_gt: np.ndarray) -> None:
    """DREAM's keypoints.csv: name, kp{i}x, kp{i}y ..., kp{i}x_gt, kp{i}y_gt ...; missing
    detections as -999.999."""
    n_kp = uv_gt.shape[1]
    header = ["name"] + ["kp%d%s" % (i, c) for i in range(n_kp) for c in "xy"] \
        + ["kp%d%s_gt" % (i, c) for i in range(n_kp) for c in "xy"]
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            for name, pred, gt in zip(frame_names, uv_pred, uv_gt):
                p = np.where(np.isfinite(pred), pred, DREAM_MISSING_KP)
                w.writerow([name] + ["%.6f" % v for v in p.reshape(-1)]
                           + ["%.6f" % v for v in gt.reshape(-1)])


def write_dream_pnp_csv(path, frame_names: Sequence[str], poses: Iterable[Optional[np.ndarray]],
                        add_m: Sequence[float], n_inframe: Sequence[int]) -> None:
    """DREAM's pnp_results.csv. The pose is DREAM's quantity: the transform from GT camera-frame
    keypoints to the estimated ones (identity when perfect); failures as -999.99."""
    header = ["name", "pnp_success", "pose_x", "pose_y", "pose_z", "pose_qx", "pose_qy", "pose_qz",
              "pose_qw", "add", "n_inframe_gt_projs"]
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            for name, T, add, n in zip(frame_names, poses, add_m, n_inframe):
                if T is None or not math.isfinite(add):
                    vals = [DREAM_FAILED_POSE] * 7 + [DREAM_FAILED_POSE]
                    ok = False
                else:
                    vals = list(T[:3, 3]) + list(quaternion_xyzw(T)) + [add]
                    ok = True
                w.writerow([name, ok] + ["%.6f" % v for v in vals] + [int(n)])


def frame_record(r, names) -> dict:
    """The results.jsonl object of one evaluated frame (``runner.FrameResult``): the shared
    per-frame fields, then the evaluation's (GT, pixel errors, ADD, DREAM's counts, timing)."""
    pe = r.pose_error
    return {
        "frame": r.name,
        "keypoints": {n: (None if not np.all(np.isfinite(p)) else [float(p[0]), float(p[1])])
                      for n, p in zip(names, r.uv_pred)},
        "camera_T_base": (r.estimate.camera_T_base.tolist()
                          if r.estimate.ok and r.truth.pnp_frame == "base" else None),
        "reprojection_error_px": r.estimate.reprojection_error_px if r.estimate.ok else None,
        "status": ("%s: %s" % (r.estimate.status, r.estimate.reason))
        if not r.estimate.ok and r.estimate.reason else r.estimate.status,
        "image": r.image_path,
        "keypoints_detected": int(np.count_nonzero(r.detected)),
        "inliers": r.estimate.num_inliers,
        "scores": None if r.scores is None else dict(zip(names, r.scores)),
        "keypoints_gt": dict(zip(names, r.truth.uv.tolist())),
        "pixel_error": dict(zip(names, np.linalg.norm(r.uv_pred - r.truth.uv, axis=1))),
        "add_m": r.add_m, "viable": r.viable, "n_inframe_gt_projs": r.n_inframe_strict,
        "pnp_points_frame": r.truth.pnp_frame,
        "camera_T_points": (r.estimate.camera_T_base.tolist()
                            if r.estimate.ok and r.truth.pnp_frame == "camera" else None),
        "camera_T_base_true": (None if r.truth.camera_T_base is None
                               else r.truth.camera_T_base.tolist()),
        "error_translation_m": None if pe is None else pe[0],
        "error_rotation_deg": None if pe is None else pe[1],
        "time_ms": {k: 1000.0 * v for k, v in r.times_s.items()},
    }
