"""Robot-centred crops: the zoom pass of the detector and the matching training crops.

A small robot far from the camera covers a few dozen pixels of the 320x240 network input, where
a stride-4 belief map cannot place its keypoints apart. The detector therefore runs a second
pass on crops around the first pass's keypoints, scaled so the robot fills the input (several
views, pooled: ``ZoomView``); training draws the same kind of crops (around the labelled
keypoints, or one half of the chain, with random margin and offset) so the network sees robots
at those scales. Both use ``crop_box`` and ``crop_image`` below.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from .preprocess import PAD_VALUE

# crop side / keypoint box side, and extra pixels: the keypoints sit at link frames inside the
# links, so the robot's silhouette reaches beyond their box
DEFAULT_MARGIN = 1.5
DEFAULT_PAD_PX = 16.0


@dataclass(frozen=True)
class ZoomView:
    """One crop of the zoom pass: around the whole robot's keypoints (``part`` None) or one half
    of the chain ("base": the first half of the keypoints, "tip": the second, sharing the middle
    one), with the crop_box ``margin`` and ``centre_shift``."""

    margin: float = DEFAULT_MARGIN
    centre_shift: Tuple[float, float] = (0.0, 0.0)
    part: Optional[str] = None

    def keypoints(self, chain_order: Union[int, Sequence[int]]) -> np.ndarray:
        """Sorted indices of the keypoints this view frames and reports. ``chain_order``: the
        keypoint indices from base to tip (RobotModel.keypoint_chain_order), or a count when the
        channels already are in that order."""
        order = np.arange(chain_order) if isinstance(chain_order, (int, np.integer)) \
            else np.asarray(chain_order, dtype=int)
        middle = (len(order) - 1) // 2
        if self.part == "base":
            return np.sort(order[:middle + 1])
        if self.part == "tip":
            return np.sort(order[middle:])
        return np.sort(order)


# The zoom pass's views by count. Each crop's keypoints are a slightly different estimate (the
# robot at another scale and offset in the input), and their per-keypoint median is more
# accurate than any one; crops around one half of the arm magnify the keypoints most often
# wrong, the wrist's. Each view is a network pass. Full-pipeline PCK AUC / ADD AUC on the 450
# synthetic 640x480 validation frames (panda_val_640 and _b, shipped model of session 6, int8
# network): one crop with margin 1.5 0.673 / 0.494, 1.3 0.679 / 0.513; the presets below:
# 2 views 0.682 / 0.530, 3 views 0.692 / 0.536, 7 views 0.698 / 0.536 (docs/evaluation.md has
# the test-set figures). Session 13's 11-keypoint model, halves along the chain: 2 views
# 0.740 / 0.704, 3 views 0.749 / 0.717, 7 views 0.756 / 0.712. The live default is 3: with the
# node's guided zoom (calibration.py) its frames cost the network passes 2 views did with a
# first pass. Static cameras and offline calibration take 7.
_SHIFT = 0.05
ZOOM_VIEWS = {
    1: (ZoomView(1.3),),
    2: (ZoomView(1.3), ZoomView(part="tip")),
    3: (ZoomView(1.3), ZoomView(part="base"), ZoomView(part="tip")),
    5: (ZoomView(1.3), ZoomView(1.2, (_SHIFT, -_SHIFT)), ZoomView(1.2, (-_SHIFT, _SHIFT)),
        ZoomView(1.4, (_SHIFT, _SHIFT)), ZoomView(1.4, (-_SHIFT, -_SHIFT))),
}
ZOOM_VIEWS[7] = ZOOM_VIEWS[5] + (ZoomView(part="base"), ZoomView(part="tip"))
DEFAULT_ZOOM_VIEWS = 3
ACCURATE_ZOOM_VIEWS = 7


def zoom_views(count: int) -> List[ZoomView]:
    """The preset views for ``count`` (a key of ZOOM_VIEWS)."""
    if count not in ZOOM_VIEWS:
        raise ValueError("zoom views must be one of %s, got %r"
                         % (", ".join(map(str, sorted(ZOOM_VIEWS))), count))
    return list(ZOOM_VIEWS[count])


def crop_box(uv: np.ndarray, aspect: float, margin: float = DEFAULT_MARGIN,
             pad_px: float = DEFAULT_PAD_PX, centre_shift: Tuple[float, float] = (0.0, 0.0)
             ) -> Optional[Tuple[int, int, int, int]]:
    """(x0, y0, w, h) of a crop with w/h = ``aspect`` around the finite points of ``uv`` (N,2).

    The crop's side is ``margin`` times the points' box (on its longer side at this aspect) plus
    ``pad_px``; ``centre_shift`` moves the centre by fractions of the crop size. None when fewer
    than two points are finite.
    """
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    uv = uv[np.all(np.isfinite(uv), axis=1)]
    if len(uv) < 2:
        return None
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    centre = (lo + hi) / 2.0
    w = max(hi[0] - lo[0], (hi[1] - lo[1]) * aspect) * margin + pad_px
    h = w / aspect
    cx = centre[0] + centre_shift[0] * w
    cy = centre[1] + centre_shift[1] * h
    w_i, h_i = max(4, int(round(w))), max(4, int(round(h)))
    return int(round(cx - w_i / 2.0)), int(round(cy - h_i / 2.0)), w_i, h_i


def crop_image(image: np.ndarray, box: Tuple[int, int, int, int], fill: int = PAD_VALUE
               ) -> np.ndarray:
    """The ``box`` (x0, y0, w, h) of ``image``; parts outside the image are ``fill`` grey."""
    x0, y0, w, h = box
    H, W = image.shape[:2]
    out = np.full((h, w) + image.shape[2:], fill, dtype=image.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


def labels_on_image(xy: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """(N,) True for labelled keypoints (N,2) inside a (width, height) image, [0, W) x [0, H)."""
    w, h = size
    return np.all(np.isfinite(xy), axis=1) & (xy[:, 0] >= 0) & (xy[:, 0] < w) \
        & (xy[:, 1] >= 0) & (xy[:, 1] < h)


# share of training crops around one half of the chain (the zoom pass's half views)
HALF_CROP_SHARE = 0.3


def random_training_crop(image: np.ndarray, xy: np.ndarray, aspect: float,
                         rng: np.random.Generator,
                         chain_order: Optional[Sequence[int]] = None
                         ) -> Tuple[np.ndarray, np.ndarray]:
    """A robot-centred crop as the zoom pass makes, with random margin and offset; some around
    one half of the chain, as its half views (ZoomView.part; ``chain_order`` as for
    ZoomView.keypoints, None: the keypoints are in chain order).

    Uses the keypoints on the image; returns the image and keypoints unchanged when fewer than
    two are on it or the crop would not zoom in (it is as large as the image).
    """
    H, W = image.shape[:2]
    xy = np.asarray(xy, dtype=np.float32)
    on = labels_on_image(xy, (W, H))
    framed = on
    if rng.random() < HALF_CROP_SHARE:
        half = np.zeros_like(on)
        half[ZoomView(part=("base", "tip")[rng.integers(2)]).keypoints(
            len(xy) if chain_order is None else chain_order)] = True
        if np.count_nonzero(on & half) >= 2:
            framed = on & half
    box = crop_box(xy[framed], aspect, margin=float(rng.uniform(1.2, 2.0)),
                   pad_px=float(rng.uniform(0.0, 2.0 * DEFAULT_PAD_PX)),
                   centre_shift=tuple(rng.uniform(-0.12, 0.12, size=2)))
    if box is None or box[2] >= W:
        return image, xy
    return crop_image(image, box), xy - np.array(box[:2], dtype=np.float32)
