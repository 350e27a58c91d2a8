"""Raw RGB image -> normalised network input, with the exact keypoint mapping raw <-> net input.

Modes (sizes are (W, H); the net input size is ``input_size``):
- ``resize``: bilinear resize to the input size, aspect not kept (DREAM's released configs).
- ``shrink-and-crop``: DREAM's centred crop with the input size's aspect (dream-compat.md §3),
  then resize.
- ``letterbox`` (ours): keep the aspect, resize to fit, pad the rest with grey (PAD_VALUE).
- ``none``: the raw image as is (the input size is then the raw size).

Every mode maps raw -> input by a per-axis affine map x_in = x * scale + shift, so the inverse is
exact. Resampling is PIL BILINEAR (antialiased when shrinking), as DREAM; OpenCV's INTER_LINEAR
gives different pixels. Pixel centres are integers (OpenCV convention).

``half_pixel``: DREAM maps x_in = x * W_in / W (no half-pixel term), while PIL (like any resampler)
puts the image content at x_in = (x + 0.5) * W_in / W - 0.5; the difference is a constant bias of
0.5 * (1 - 1/s) raw pixels (-1.5 px when shrinking 1280 -> 320). DREAM's modes keep DREAM's rule
(its models were trained with it); letterbox (ours) uses the exact pixel-centre rule by default.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from dream_ros.errors import ConfigError, InputError

MODES = ("resize", "shrink-and-crop", "letterbox", "none")
PAD_VALUE = 128   # letterbox fill, uint8 grey (normalises to ~0 with mean 0.5, std 0.5)


@dataclass(frozen=True)
class Geometry:
    """Raw <-> net input mapping for one raw image size."""

    raw_size: Tuple[int, int]
    input_size: Tuple[int, int]
    scale: Tuple[float, float]
    shift: Tuple[float, float]
    crop: Optional[Tuple[int, int, int, int]] = None      # (x, y, w, h) in the raw image
    content: Tuple[int, int, int, int] = (0, 0, 0, 0)     # (x, y, w, h) of the image in the input

    def to_input(self, uv_raw) -> np.ndarray:
        uv = np.asarray(uv_raw, dtype=np.float64)
        return uv * np.asarray(self.scale) + np.asarray(self.shift)

    def to_raw(self, uv_input) -> np.ndarray:
        uv = np.asarray(uv_input, dtype=np.float64)
        return (uv - np.asarray(self.shift)) / np.asarray(self.scale)

    def inside_raw(self, uv_raw) -> np.ndarray:
        """(N,) True where a raw-image point lies on the image (pixel extents [-0.5, W-0.5])."""
        return inside_image(uv_raw, self.raw_size)


def inside_image(uv, size: Sequence[int]) -> np.ndarray:
    """(..., ) True where pixel positions (..., 2) lie on a (width, height) image (extents
    [-0.5, W-0.5]); NaN positions are outside."""
    uv = np.asarray(uv, dtype=np.float64)
    w, h = size
    with np.errstate(invalid="ignore"):
        return ((uv[..., 0] >= -0.5) & (uv[..., 0] <= w - 0.5) & (uv[..., 1] >= -0.5)
                & (uv[..., 1] <= h - 0.5))


def dream_crop_box(raw_size: Sequence[int], reference: Sequence[int]) -> Tuple[int, int, int, int]:
    """DREAM's centred crop (x, y, w, h) with the reference size's aspect (dream-compat.md §3)."""
    w, h = int(raw_size[0]), int(raw_size[1])
    wr, hr = int(reference[0]), int(reference[1])
    w_alt = int(h * wr / hr)
    h_alt = int(w * hr / wr)
    cw, ch = (w_alt, h) if w >= w_alt else (w, h_alt)
    return (w - cw) // 2, (h - ch) // 2, cw, ch


class Preprocessor:
    """``mode``, ``input_size`` (W, H) and normalisation (mean, std per RGB channel on [0, 1])."""

    def __init__(self, mode: str = "resize", input_size: Sequence[int] = (400, 400),
                 mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5),
                 half_pixel: Optional[bool] = None):
        if mode not in MODES:
            raise ConfigError(f"preprocessing mode {mode!r} not in {MODES}")
        if len(input_size) != 2 or min(int(v) for v in input_size) < 1:
            raise ConfigError(f"input_size must be (W, H) positive, got {input_size}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ConfigError(f"normalisation needs 3 means and 3 positive stds, got {mean}, {std}")
        self.mode = mode
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        # (v / 255 - mean) / std = v * gain + offset
        self._gain = (np.float32(1.0 / 255.0) / self.std).astype(np.float32)
        self._offset = (-self.mean / self.std).astype(np.float32)
        # None: exact pixel-centre mapping for our letterbox, DREAM's rule for DREAM's modes
        self.half_pixel = (mode == "letterbox") if half_pixel is None else bool(half_pixel)

    # ------------------------------------------------------------------ geometry
    def geometry(self, raw_size: Sequence[int]) -> Geometry:
        w, h = int(raw_size[0]), int(raw_size[1])
        if w < 1 or h < 1:
            raise InputError(f"raw image size must be positive, got {raw_size}")
        wi, hi = self.input_size
        hp = 0.5 if self.half_pixel else 0.0

        def geo(inp, sx, sy, cx, cy, ox, oy, content, crop=None):
            # x_in = (x - cx + hp) * sx - hp + ox
            return Geometry((w, h), inp, (sx, sy), ((hp - cx) * sx - hp + ox,
                                                   (hp - cy) * sy - hp + oy), crop, content)

        if self.mode == "none":
            return geo((w, h), 1.0, 1.0, 0, 0, 0, 0, (0, 0, w, h))
        if self.mode == "resize":
            return geo((wi, hi), wi / w, hi / h, 0, 0, 0, 0, (0, 0, wi, hi))
        if self.mode == "shrink-and-crop":
            cx, cy, cw, ch = dream_crop_box((w, h), (wi, hi))
            return geo((wi, hi), wi / cw, hi / ch, cx, cy, 0, 0, (0, 0, wi, hi), (cx, cy, cw, ch))
        # letterbox: largest aspect-keeping fit, centred; per-axis scale of the rounded size
        s = min(wi / w, hi / h)
        nw, nh = min(wi, max(1, int(round(w * s)))), min(hi, max(1, int(round(h * s))))
        ox, oy = (wi - nw) // 2, (hi - nh) // 2
        return geo((wi, hi), nw / w, nh / h, 0, 0, ox, oy, (ox, oy, nw, nh))

    def to_input(self, uv_raw, raw_size: Sequence[int]) -> np.ndarray:
        return self.geometry(raw_size).to_input(uv_raw)

    def to_raw(self, uv_input, raw_size: Sequence[int]) -> np.ndarray:
        return self.geometry(raw_size).to_raw(uv_input)

    # ------------------------------------------------------------------ images
    def image(self, rgb: np.ndarray) -> Tuple[np.ndarray, Geometry]:
        """uint8 (H,W,3) RGB -> (uint8 (H_in,W_in,3) net-input image, geometry); not normalised."""
        rgb = check_rgb(rgb)
        h, w = rgb.shape[:2]
        g = self.geometry((w, h))
        if self.mode == "none":
            return rgb, g
        img = Image.fromarray(rgb)
        if self.mode == "resize":
            out = img.resize(g.input_size, Image.BILINEAR)
        elif self.mode == "shrink-and-crop":
            cx, cy, cw, ch = g.crop
            out = img.crop((cx, cy, cx + cw, cy + ch)).resize(g.input_size, Image.BILINEAR)
        else:
            ox, oy, nw, nh = g.content
            out = Image.new("RGB", g.input_size, (PAD_VALUE,) * 3)
            out.paste(img.resize((nw, nh), Image.BILINEAR), (ox, oy))
        return np.asarray(out), g

    def normalize(self, rgb_input: np.ndarray) -> np.ndarray:
        """uint8 (H,W,3) -> float32 (3,H,W): /255, then (v - mean) / std, as one multiply-add per
        channel written straight into its plane (a tenth of the time of whole-image float
        arithmetic and a transposed copy: about 1 ms per network pass here)."""
        h, w = rgb_input.shape[:2]
        out = np.empty((3, h, w), dtype=np.float32)
        for c in range(3):
            np.multiply(rgb_input[..., c], self._gain[c], out=out[c], casting="unsafe")
            out[c] += self._offset[c]
        return out

    def __call__(self, rgb: np.ndarray) -> Tuple[np.ndarray, Geometry]:
        """uint8 (H,W,3) RGB -> (float32 (3,H_in,W_in) normalised input, geometry)."""
        img, g = self.image(rgb)
        return self.normalize(img), g

    def batch(self, images: Sequence[np.ndarray]) -> Tuple[np.ndarray, List[Geometry]]:
        """Images -> (float32 (B,3,H_in,W_in), geometries). Mode "none" needs equal sizes."""
        if len(images) == 0:
            raise InputError("empty image batch")
        outs, geos = zip(*(self(im) for im in images))
        if len({o.shape for o in outs}) != 1:
            raise InputError("images of different sizes cannot be batched in mode 'none'")
        return np.stack(outs), list(geos)


def check_rgb(rgb) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or min(rgb.shape[:2]) < 1:
        raise InputError(f"expected an RGB uint8 image (H, W, 3), got {rgb.dtype} {rgb.shape}")
    return rgb
