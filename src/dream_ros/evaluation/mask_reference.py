"""A reference camera pose from robot masks, for real images that have no ground-truth pose.

Real datasets such as EasyHeC's come with hand-drawn robot masks. With one static camera, the
pose that best overlaps every mask with the robot rendered at that frame's joints (mean
intersection over union) is a reference the keypoint pipeline can be scored against: the
detector's pixel errors against the keypoints projected at that pose, and each estimate's
distance from it. The fit also shows which frames cannot be trusted: a frame whose mask no
common pose fits (IoU well below the others) has joint angles that do not describe its image, and
no calibration method can agree with it.

The fit maximises mean IoU with scipy's Nelder-Mead (IoU is piecewise constant in the pose, so
gradient methods do not apply), from the best of the given start poses, coarse to fine; then it
drops the frames below ``min_iou``, refits on the rest and restarts the search from its result
while that still gains. On the EasyHeC frames, fits from starts 80 and 400 mm apart ended within
7 mm of each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import InputError

# Nelder-Mead stages: initial simplex step (rotation vector in rad, translation in m) and budget
COARSE_TO_FINE = ((0.04, 0.05, 300), (0.01, 0.02, 300), (0.003, 0.005, 200))
RESTARTS = 3


@dataclass
class MaskFrame:
    name: str
    joints: Dict[str, float]
    K: np.ndarray            # (3,3) of the full-size image
    mask: np.ndarray         # (H,W) bool, full size
    thumbnail: Optional[np.ndarray] = None   # small RGB image of the frame, for the contact sheet


@dataclass
class MaskReference:
    camera_T_base: np.ndarray            # (4,4) base -> optical frame
    iou: Dict[str, float]                # every frame's IoU at the reference pose
    consistent: List[str]                # frames the reference was fitted to (IoU >= min_iou)
    min_iou: float

    @property
    def mean_iou(self) -> float:
        return float(np.mean([self.iou[n] for n in self.consistent])) if self.consistent else 0.0


class SilhouetteScorer:
    """IoU between each frame's mask and the robot rendered at a pose, at ``scale`` of the image
    size (masks shrunk once; the render is a segmentation pass only)."""

    def __init__(self, robot_config, frames: Sequence[MaskFrame], scale: float = 0.5):
        from ..synth.render import RobotRenderer
        if not frames:
            raise InputError("no frames with masks to fit a reference pose to")
        sizes = {f.mask.shape for f in frames}
        if len(sizes) != 1:
            raise InputError("frames with masks differ in size: %s" % sorted(sizes))
        h, w = next(iter(sizes))
        self.width, self.height = max(8, int(round(w * scale))), max(8, int(round(h * scale)))
        sx, sy = self.width / w, self.height / h
        self.frames = list(frames)
        self._K = [_scaled_K(f.K, sx, sy) for f in frames]
        self._masks = [_shrink_mask(f.mask, self.width, self.height) for f in frames]
        self._renderer = RobotRenderer(robot_config, self.width, self.height)

    def silhouettes(self, index: int, camera_T_base: np.ndarray):
        """(mask, rendered robot) of frame ``index``, both (h,w) bool at the scorer's size."""
        f = self.frames[index]
        return self._masks[index], self._renderer.render_silhouette(f.joints, camera_T_base,
                                                                    self._K[index])

    def iou(self, index: int, camera_T_base: np.ndarray) -> float:
        mask, rendered = self.silhouettes(index, camera_T_base)
        union = np.count_nonzero(mask | rendered)
        return float(np.count_nonzero(mask & rendered) / union) if union else 0.0

    def mean_iou(self, camera_T_base: np.ndarray, indices: Sequence[int]) -> float:
        return float(np.mean([self.iou(i, camera_T_base) for i in indices]))

    def close(self) -> None:
        self._renderer.close()


def _scaled_K(K, sx: float, sy: float) -> np.ndarray:
    """Intrinsics of the image resized by (sx, sy), pixel centres kept aligned."""
    K = np.asarray(K, float).copy()
    K[0, 0] *= sx
    K[1, 1] *= sy
    K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return K


def _shrink_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    import cv2
    area = cv2.resize(np.asarray(mask, bool).astype(np.float32), (width, height),
                      interpolation=cv2.INTER_AREA)
    return area >= 0.5


def _pose_vector(T: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation
    return np.r_[Rotation.from_matrix(T[:3, :3]).as_rotvec(), T[:3, 3]]


def _pose_matrix(x: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(x[:3]).as_matrix()
    T[:3, 3] = x[3:]
    return T


def _maximise(scorer: SilhouetteScorer, start: np.ndarray, indices: Sequence[int],
              stages) -> np.ndarray:
    from scipy.optimize import minimize

    def cost(x):
        return -scorer.mean_iou(_pose_matrix(x), indices)

    x = _pose_vector(start)
    for rot_step, trans_step, budget in stages:
        steps = np.r_[[rot_step] * 3, [trans_step] * 3]
        simplex = np.vstack([x, x + np.diag(steps)])
        x = minimize(cost, x, method="Nelder-Mead",
                     options=dict(initial_simplex=simplex, maxfev=budget, xatol=1e-5,
                                  fatol=1e-5)).x
    return _pose_matrix(x)


def _restarted(scorer: SilhouetteScorer, T: np.ndarray, indices: Sequence[int], stages,
               rounds: int = RESTARTS, min_gain: float = 1e-3) -> np.ndarray:
    """Nelder-Mead again from its own result while that still gains IoU: a fresh simplex gets
    out of the collapsed one the last search ended in (each restart on the EasyHeC frames moved
    the pose by up to 10 mm and added ~0.004 IoU)."""
    best = scorer.mean_iou(T, indices)
    for _ in range(rounds):
        T_next = _maximise(scorer, T, indices, stages)
        score = scorer.mean_iou(T_next, indices)
        if score > best:
            T, gain, best = T_next, score - best, score
            if gain >= min_gain:
                continue
        break
    return T


def fit_reference(robot_config, frames: Sequence[MaskFrame], starts: Sequence[np.ndarray],
                  min_iou: float = 0.8, scale: float = 0.5, stages=None
                  ) -> MaskReference:
    """The camera pose that best fits the masks of the frames consistent with one another.

    starts: candidate poses (e.g. the single-frame and multi-frame estimates); the best of them
    by mean IoU over all frames seeds the fit. stages: Nelder-Mead's (rotation step rad,
    translation step m, evaluations) from coarse to fine (default ``COARSE_TO_FINE``); the refit
    runs all but the first.
    """
    stages = stages or COARSE_TO_FINE
    starts = [np.asarray(T, float) for T in starts if T is not None]
    if not starts:
        raise InputError("no start pose for the mask fit (no frame was calibrated)")
    scorer = SilhouetteScorer(robot_config, frames, scale=scale)
    try:
        everyone = list(range(len(frames)))
        start = max(starts, key=lambda T: scorer.mean_iou(T, everyone))
        T = _maximise(scorer, start, everyone, stages)
        ious = [scorer.iou(i, T) for i in everyone]
        kept = [i for i in everyone if ious[i] >= min_iou]
        if kept and len(kept) < len(everyone):
            T = _maximise(scorer, T, kept, stages[1:] or stages)
            ious = [scorer.iou(i, T) for i in everyone]
            kept = [i for i in everyone if ious[i] >= min_iou]
        if kept:
            T = _restarted(scorer, T, kept, stages[1:] or stages)
            ious = [scorer.iou(i, T) for i in everyone]
            kept = [i for i in everyone if ious[i] >= min_iou]
    finally:
        scorer.close()
    return MaskReference(camera_T_base=T, iou={f.name: ious[i] for i, f in enumerate(frames)},
                         consistent=[frames[i].name for i in kept], min_iou=float(min_iou))


def keypoint_errors(reference: MaskReference, frames: Sequence[MaskFrame], robot,
                    detections: Dict[str, Dict[str, Optional[Sequence[float]]]]
                    ) -> Dict[str, Dict[str, float]]:
    """Pixel distance of each detected keypoint from the keypoint projected at the reference
    pose, on the consistent frames: {frame: {keypoint: px}} (undetected keypoints left out)."""
    from ..visualize import project
    out = {}
    by_name = {f.name: f for f in frames}
    for name in reference.consistent:
        f = by_name[name]
        uv_ref = project(robot.keypoints_3d(f.joints), reference.camera_T_base, f.K)
        found = detections.get(name) or {}
        out[name] = {k: float(np.linalg.norm(np.asarray(found[k], float) - uv_ref[i]))
                     for i, k in enumerate(robot.keypoint_names) if found.get(k) is not None}
    return out


# contact-sheet colours (RGB): mask only, rendered robot only, both
MASK_ONLY, RENDER_ONLY, BOTH = (255, 40, 40), (40, 90, 255), (40, 220, 40)


def contact_sheet(reference: MaskReference, frames: Sequence[MaskFrame], robot_config,
                  tile_width: int = 320, columns: int = 5) -> np.ndarray:
    """One tile per frame: the frame (dimmed; grey without a thumbnail) with the mask alone in
    red, the robot rendered at the reference pose alone in blue, their overlap in green, and the
    frame's IoU ("left out" below the fit's threshold)."""
    import cv2
    width = frames[0].mask.shape[1]
    scorer = SilhouetteScorer(robot_config, frames, scale=tile_width / float(width))
    tiles = []
    try:
        for i, f in enumerate(frames):
            mask, rendered = scorer.silhouettes(i, reference.camera_T_base)
            h, w = mask.shape
            img = (cv2.resize(f.thumbnail, (w, h), interpolation=cv2.INTER_AREA)
                   if f.thumbnail is not None else np.full((h, w, 3), 128, np.uint8)) // 2
            for sel, colour in ((mask & ~rendered, MASK_ONLY), (rendered & ~mask, RENDER_ONLY),
                                (mask & rendered, BOTH)):
                img[sel] = (img[sel] + np.asarray(colour)) // 2
            text = "%s IoU %.2f%s" % (f.name, reference.iou.get(f.name, float("nan")),
                                      "" if f.name in reference.consistent else " left out")
            cv2.putText(img, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1,
                        cv2.LINE_AA)
            tiles.append(img)
    finally:
        scorer.close()
    blank = np.zeros_like(tiles[0])
    tiles += [blank] * (-len(tiles) % columns)
    return np.vstack([np.hstack(tiles[r:r + columns]) for r in range(0, len(tiles), columns)])
