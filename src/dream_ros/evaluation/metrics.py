"""DREAM's evaluation metrics, reproduced exactly (../shared/reference/dream-compat.md §8).

- Keypoint PCK AUC over 0-20 px in raw pixels: in-frame GT test inclusive (0 <= u <= W), a missing
  detection of an in-frame keypoint counts as a failure, out-of-frame keypoints are excluded;
  y(t) = #(error < t) on arange(0, 20, 0.01); AUC = trapezoid(y, dx) / 20 / #in-frame.
- ADD per frame: mean over the keypoints used by PnP of the distance between the estimated and GT
  camera-frame keypoints; ADD AUC over 0-0.1 (metres here: datasets in cm are converted on reading)
  with c(t) = #(found ADD <= t) / #viable frames, viable = >= 4 GT keypoints strictly inside the image.

Missing detections are NaN rows here (DREAM's -999.999 sentinel only appears in the DREAM-style CSVs);
a failed frame's ADD is NaN.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError

PCK_MAX_PX = 20.0
PCK_STEP_PX = 0.01
ADD_MAX_M = 0.1
ADD_STEP_M = 1e-5
MIN_VIABLE_KEYPOINTS = 4

# NumPy 2 renamed trapz to trapezoid (same rule); old NumPy (ROS Noetic's 1.17) has only trapz.
trapezoid = getattr(np, "trapezoid", None) or np.trapz


def _as_uv(uv, what: str) -> np.ndarray:
    a = np.asarray(uv, dtype=float)
    if a.ndim < 2 or a.shape[-1] != 2:
        raise InputError("%s must have shape (..., 2), got %r" % (what, a.shape))
    return a


def in_frame_mask(uv_gt, image_size: Tuple[int, int], strict: bool = False) -> np.ndarray:
    """(...,) bool: GT projection inside the raw image. DREAM's PCK test is inclusive
    (0 <= u <= W, 0 <= v <= H); its ADD viability test is strict (0 < u < W, 0 < v < H)."""
    uv = _as_uv(uv_gt, "uv_gt")
    w, h = float(image_size[0]), float(image_size[1])
    u, v = uv[..., 0], uv[..., 1]
    with np.errstate(invalid="ignore"):
        if strict:
            return (u > 0) & (u < w) & (v > 0) & (v < h)
        return (u >= 0) & (u <= w) & (v >= 0) & (v <= h)


def keypoint_errors(uv_pred, uv_gt) -> np.ndarray:
    """L2 pixel error per keypoint, NaN where the prediction is missing (NaN row)."""
    pred, gt = _as_uv(uv_pred, "uv_pred"), _as_uv(uv_gt, "uv_gt")
    if pred.shape != gt.shape:
        raise InputError("predicted and GT keypoints differ in shape: %r vs %r" % (pred.shape, gt.shape))
    return np.linalg.norm(pred - gt, axis=-1)


@dataclass
class KeypointMetrics:
    """DREAM's keypoint PCK summary over all frames x keypoints."""

    auc: Optional[float]          # None when there is no in-frame GT keypoint
    num_gt_in_frame: int
    num_found_in_frame: int
    mean_px: Optional[float]      # over found in-frame keypoints
    median_px: Optional[float]
    std_px: Optional[float]       # population std (ddof 0)
    thresholds_px: np.ndarray
    pck: np.ndarray               # fraction of in-frame GT keypoints with error < t

    @property
    def found_fraction(self) -> Optional[float]:
        return self.num_found_in_frame / self.num_gt_in_frame if self.num_gt_in_frame else None

    def summary(self) -> dict:
        d = asdict(self)
        del d["thresholds_px"], d["pck"]
        d["found_fraction"] = self.found_fraction
        return d


def keypoint_pck(uv_pred, uv_gt, image_size: Tuple[int, int],
                 max_px: float = PCK_MAX_PX, step_px: float = PCK_STEP_PX) -> KeypointMetrics:
    """PCK AUC as DREAM computes it. ``uv_pred``/``uv_gt``: (..., 2) matched arrays (e.g. (N, K, 2)),
    NaN rows in ``uv_pred`` = not detected; ``image_size`` = raw (W, H)."""
    gt = _as_uv(uv_gt, "uv_gt")
    err = keypoint_errors(uv_pred, gt)
    in_frame = in_frame_mask(gt, image_size)
    found = in_frame & np.isfinite(err)
    e = err[found]
    n_gt = int(np.count_nonzero(in_frame))
    thresholds = np.arange(0.0, max_px, step_px)
    counts = (e[None, :] < thresholds[:, None]).sum(axis=1) if e.size else np.zeros(thresholds.shape)
    if n_gt:
        auc = float(trapezoid(counts, dx=step_px) / max_px / n_gt)
        pck = counts / n_gt
    else:
        auc, pck = None, np.zeros(thresholds.shape)
    stats = (float(np.mean(e)), float(np.median(e)), float(np.std(e))) if e.size else (None, None, None)
    return KeypointMetrics(auc, n_gt, int(e.size), stats[0], stats[1], stats[2], thresholds, pck)


def viable_frames(uv_gt, image_size: Tuple[int, int],
                  min_keypoints: int = MIN_VIABLE_KEYPOINTS) -> np.ndarray:
    """(N,) bool: frames with >= 4 GT keypoints strictly inside the image (DREAM's ADD denominator).
    ``uv_gt``: (N, K, 2)."""
    gt = _as_uv(uv_gt, "uv_gt")
    if gt.ndim != 3:
        raise InputError("uv_gt must be (N, K, 2), got %r" % (gt.shape,))
    return in_frame_mask(gt, image_size, strict=True).sum(axis=1) >= min_keypoints


def add_error(camera_T_base: Optional[np.ndarray], points_base, points_camera_gt,
              used=None) -> float:
    """ADD of one frame: mean over the ``used`` keypoints (those PnP was given; default all) of
    ||camera_T_base . p_base - p_camera_gt||. NaN for a failed frame (``camera_T_base`` None).

    This is DREAM's quantity: DREAM solves PnP against the GT camera-frame points, getting the
    correction C = T_est . T_gt^-1, and averages ||C p_cam - p_cam|| = ||T_est p_base - p_cam||."""
    if camera_T_base is None:
        return float("nan")
    T = np.asarray(camera_T_base, dtype=float)
    pb = np.asarray(points_base, dtype=float).reshape(-1, 3)
    pc = np.asarray(points_camera_gt, dtype=float).reshape(-1, 3)
    if T.shape != (4, 4) or pb.shape != pc.shape:
        raise InputError("add_error: need a 4x4 transform and matching (K,3) point sets, got %r, %r, %r"
                         % (T.shape, pb.shape, pc.shape))
    mask = np.ones(len(pb), bool) if used is None else np.asarray(used, bool).reshape(-1)
    if not mask.any():
        return float("nan")
    est = pb[mask] @ T[:3, :3].T + T[:3, 3]
    return float(np.mean(np.linalg.norm(est - pc[mask], axis=1)))


@dataclass
class AddMetrics:
    """DREAM's ADD summary over frames (distances in metres)."""

    auc: Optional[float]          # None when no frame is viable
    num_frames: int
    num_found: int                # frames with a PnP solution (finite ADD)
    num_viable: int
    num_failed_viable: int        # viable frames without a PnP solution
    num_found_beyond_max: int     # frames with a pose more than max_m off: the wrong poses a
                                  # live user would be given (the AUC cannot tell them from failures)
    mean_m: Optional[float]       # over found frames
    median_m: Optional[float]
    std_m: Optional[float]
    thresholds_m: np.ndarray
    curve: np.ndarray             # #(found ADD <= t) / #viable

    def summary(self) -> dict:
        d = asdict(self)
        del d["thresholds_m"], d["curve"]
        return d


def add_metrics(add_per_frame: Sequence[float], viable: Sequence[bool],
                max_m: float = ADD_MAX_M, step_m: float = ADD_STEP_M) -> AddMetrics:
    """ADD AUC as DREAM computes it: failed frames (NaN) never count as found but stay in the viable
    denominator; found non-viable frames still count in the numerator (as in DREAM)."""
    add = np.asarray(add_per_frame, dtype=float).reshape(-1)
    via = np.asarray(viable, dtype=bool).reshape(-1)
    if add.shape != via.shape:
        raise InputError("add_per_frame and viable differ in length: %d vs %d" % (add.size, via.size))
    found = add[np.isfinite(add)]
    n_viable = int(np.count_nonzero(via))
    thresholds = np.arange(0.0, max_m, step_m)
    if n_viable:
        curve = np.searchsorted(np.sort(found), thresholds, side="right") / n_viable
        auc = float(trapezoid(curve, dx=step_m) / max_m)
    else:
        curve, auc = np.zeros(thresholds.shape), None
    stats = (float(np.mean(found)), float(np.median(found)), float(np.std(found))) if found.size \
        else (None, None, None)
    # counted per frame: viable - found goes negative when non-viable frames are found too
    n_failed_viable = int(np.count_nonzero(via & ~np.isfinite(add)))
    return AddMetrics(auc, int(add.size), int(found.size), n_viable, n_failed_viable,
                      int(np.count_nonzero(found > max_m)), stats[0], stats[1], stats[2],
                      thresholds, curve)


def per_keypoint_table(names: Sequence[str], uv_pred, uv_gt, image_size: Tuple[int, int]) -> list:
    """One row per keypoint: in-frame count, found fraction, error statistics (px) and PCK AUC."""
    pred, gt = _as_uv(uv_pred, "uv_pred"), _as_uv(uv_gt, "uv_gt")
    if pred.ndim != 3 or pred.shape[1] != len(names):
        raise InputError("uv arrays must be (N, K, 2) with K = %d names, got %r" % (len(names), pred.shape))
    rows = []
    for k, name in enumerate(names):
        m = keypoint_pck(pred[:, k], gt[:, k], image_size)
        err = keypoint_errors(pred[:, k], gt[:, k])[in_frame_mask(gt[:, k], image_size)]
        err = err[np.isfinite(err)]
        rows.append({
            "keypoint": name, "in_frame": m.num_gt_in_frame, "found": m.num_found_in_frame,
            "found_fraction": m.found_fraction, "pck_auc": m.auc, "mean_px": m.mean_px,
            "median_px": m.median_px,
            "p95_px": float(np.percentile(err, 95)) if err.size else None, "std_px": m.std_px,
        })
    return rows


# Camera-to-robot distance bins (metres) of ``by_camera_distance``: the synthetic sets' shells run
# from about 0.5 to 3 m, and near and far views fail differently (near: the robot leaves the
# image and its links fill it; far: the robot spans few pixels and depth is ill-posed).
DISTANCE_EDGES_M = (0.0, 1.0, 1.5, 2.0, 2.5, 3.0, float("inf"))


def distance_bin_label(row: dict) -> str:
    """"1.5-2 m" or, for the open last bin, ">= 3 m" (a by_camera_distance row; its open upper
    edge is inf, or None once read back from summary.json)."""
    hi = row["max_m"]
    if hi is None or not np.isfinite(hi):
        return ">= %g m" % row["min_m"]
    return "%g-%g m" % (row["min_m"], hi)


def by_camera_distance(distance_m, uv_pred, uv_gt, add_per_frame, viable,
                       image_size: Tuple[int, int], edges=DISTANCE_EDGES_M) -> list:
    """PCK and ADD (DREAM's definitions, as above) of the frames in each camera distance bin:
    one row per non-empty bin. ``distance_m``: (N,) distance from the camera to the robot (the
    evaluation takes its keypoints' centroid); ``uv_pred``/``uv_gt``: (N, K, 2) over the keypoints
    PCK is scored on; ``add_per_frame``/``viable``: (N,) as add_metrics takes them."""
    dist = np.asarray(distance_m, dtype=float).reshape(-1)
    pred, gt = _as_uv(uv_pred, "uv_pred"), _as_uv(uv_gt, "uv_gt")
    add = np.asarray(add_per_frame, dtype=float).reshape(-1)
    via = np.asarray(viable, dtype=bool).reshape(-1)
    if not (len(dist) == len(pred) == len(gt) == len(add) == len(via)):
        raise InputError("by_camera_distance: distance, keypoints, ADD and viability need one "
                         "entry per frame, got %d, %d, %d, %d, %d"
                         % (len(dist), len(pred), len(gt), len(add), len(via)))
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (dist >= lo) & (dist < hi)
        if not m.any():
            continue
        km, am = keypoint_pck(pred[m], gt[m], image_size), add_metrics(add[m], via[m])
        rows.append({"min_m": float(lo), "max_m": float(hi), "frames": int(m.sum()),
                     "pck_auc": km.auc, "median_px": km.median_px, "add_auc": am.auc,
                     "add_median_m": am.median_m, "viable": am.num_viable,
                     "failed_viable": am.num_failed_viable,
                     "beyond_max": am.num_found_beyond_max})
    return rows
