"""PNG figures of an evaluation: PCK curve, ADD curve, error histograms, and simple overlays.

Figures use matplotlib's Agg canvas directly (no pyplot, no global backend switch), so this works
headless and inside processes that already use another backend.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .metrics import AddMetrics, KeypointMetrics, distance_bin_label
from .results import atomic_path


def _figure(w=6.0, h=4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> None:
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")


def _fmt(x, spec="%.3f"):
    return "n/a" if x is None else spec % x


def plot_pck(km: KeypointMetrics, path, title: str = "") -> None:
    fig = _figure()
    ax = fig.add_subplot(111)
    ax.plot(km.thresholds_px, km.pck, lw=2, label="AUC %s" % _fmt(km.auc))
    ax.set_xlim(0, km.thresholds_px[-1] if km.thresholds_px.size else 20)
    ax.set_ylim(0, 1.0)
    ax.set_xlabel("threshold (px)")
    ax.set_ylabel("fraction of in-frame keypoints with error < threshold")
    ax.set_title(title or "keypoint PCK (%d in-frame, %d found)" % (km.num_gt_in_frame,
                                                                    km.num_found_in_frame))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    _save(fig, path)


def plot_add(am: AddMetrics, path, title: str = "") -> None:
    fig = _figure()
    ax = fig.add_subplot(111)
    ax.plot(am.thresholds_m * 100.0, am.curve, lw=2, label="AUC %s" % _fmt(am.auc))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, max(1.0, float(am.curve.max()) if am.curve.size else 1.0))
    ax.set_xlabel("ADD threshold (cm)")
    ax.set_ylabel("fraction of viable frames with ADD <= threshold")
    ax.set_title(title or "ADD (%d found / %d viable frames)" % (am.num_found, am.num_viable))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    _save(fig, path)


def plot_error_histograms(pixel_errors: np.ndarray, add_m: np.ndarray, path,
                          max_px: float = 40.0, max_add_cm: float = 20.0) -> None:
    """Left: pixel error of found in-frame keypoints; right: ADD of found frames. Values beyond the
    range are piled into the last bin so nothing silently disappears."""
    fig = _figure(10.0, 4.0)
    ax1, ax2 = fig.add_subplot(121), fig.add_subplot(122)
    e = np.asarray(pixel_errors, float)
    e = e[np.isfinite(e)]
    ax1.hist(np.clip(e, 0, max_px), bins=40, range=(0, max_px), color="tab:blue")
    ax1.set_xlabel("keypoint error (px, last bin = >= %g)" % max_px)
    ax1.set_ylabel("keypoints")
    ax1.set_title("%d found keypoints, median %s px" % (e.size, _fmt(np.median(e) if e.size else None, "%.2f")))
    a = np.asarray(add_m, float)
    a = a[np.isfinite(a)] * 100.0
    ax2.hist(np.clip(a, 0, max_add_cm), bins=40, range=(0, max_add_cm), color="tab:orange")
    ax2.set_xlabel("ADD (cm, last bin = >= %g)" % max_add_cm)
    ax2.set_ylabel("frames")
    ax2.set_title("%d found frames, median %s cm" % (a.size, _fmt(np.median(a) if a.size else None, "%.2f")))
    _save(fig, path)


def overlay(rgb: np.ndarray, names: Sequence[str], uv_pred: np.ndarray, uv_gt: np.ndarray,
            estimate=None, points_3d=None, K=None, lines: Sequence[str] = ()) -> np.ndarray:
    """RGB overlay: the node's drawing (detections, reprojections with the estimate, status text)
    plus the GT keypoints as white rings, so detection error is visible at a glance."""
    import cv2
    from .. import visualize
    from ..types import Detections
    uv = np.asarray(uv_pred, float)
    det = np.all(np.isfinite(uv), axis=1)
    h, w = rgb.shape[:2]
    dets = Detections(list(names), uv, np.where(det, 1.0, 0.0), det, (w, h))
    img = visualize.calibration_overlay(rgb, dets, estimate, points_3d, K=K,
                                        status=list(lines) + ["white rings: ground truth"])
    s = max(1, int(round(max(h, w) / 640.0)))
    for g in np.asarray(uv_gt, float):
        if np.all(np.isfinite(g)) and np.all(np.abs(g) < 1e5):
            c = (int(round(g[0])), int(round(g[1])))
            cv2.circle(img, c, 9 * s, (0, 0, 0), 3 * s, cv2.LINE_AA)     # dark halo: visible on
            cv2.circle(img, c, 9 * s, (255, 255, 255), s, cv2.LINE_AA)   # the white robot too
    return img


def save_rgb_png(path, rgb: np.ndarray) -> None:
    import cv2
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(tmp, cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)):
            raise OSError("could not write %s" % path)


def plot_by_distance(rows: Sequence[dict], path) -> None:
    """PCK AUC and ADD AUC per camera distance bin (metrics.by_camera_distance), frame counts on
    the bars: where in the working range the errors come from."""
    fig = _figure(7.0, 4.0)
    ax = fig.add_subplot(111)
    x = np.arange(len(rows))
    labels = [distance_bin_label(r) for r in rows]
    pck = [r["pck_auc"] or 0.0 for r in rows]
    add = [r["add_auc"] or 0.0 for r in rows]
    ax.bar(x - 0.2, pck, 0.4, label="PCK AUC", color="tab:blue")
    bars = ax.bar(x + 0.2, add, 0.4, label="ADD AUC", color="tab:orange")
    for b, r in zip(bars, rows):
        ax.annotate("%d" % r["frames"], (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x)
    ax.set_xticklabels(labels)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("camera to robot distance (frames per bin on the bars)")
    ax.set_ylabel("AUC")
    ax.set_title("accuracy by camera distance")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="lower right")
    _save(fig, path)
