"""Random backgrounds: procedural patterns (numpy/OpenCV) and photographs that install offline.

Photos come from scikit-image's bundled sample data (no download at run time); their licences are
listed in ``PHOTO_LICENSES`` and copied into each dataset card.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

# scikit-image sample images shipped inside the wheel (no download). Licences as stated in each
# loader's docstring (scikit-image 0.26); images without a clear statement are left out.
PHOTO_LICENSES: Dict[str, str] = {
    "astronaut": "public domain (NASA)",
    "brick": "CC0 (CC0Textures)",
    "camera": "CC0 (Lav Varshney)",
    "cat": "CC0 (Stefan van der Walt)",
    "chelsea": "CC0 (Stefan van der Walt)",
    "coffee": "CC0 (Rachel Michetti)",
    "coins": "no known copyright restrictions (Walters Art Museum)",
    "grass": "CC0 (CC0Textures)",
    "gravel": "CC0 (CC0Textures)",
    "hubble_deep_field": "public domain (NASA)",
    "immunohistochemistry": "no known copyright restrictions",
    "retina": "CC0 1.0 (Hakon Haugan)",
    "rocket": "public domain (SpaceX)",
}


def load_photos(min_side: int = 256) -> Dict[str, np.ndarray]:
    """RGB uint8 photos available offline; empty if scikit-image is not installed."""
    try:
        import skimage.data as data
    except ImportError:
        return {}
    out = {}
    for name in PHOTO_LICENSES:
        fn = getattr(data, name, None)
        if fn is None:
            continue
        try:
            img = np.asarray(fn())
        except Exception:   # an image that would need a download: skip it
            continue
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        if img.ndim != 3 or min(img.shape[:2]) < min_side:
            continue
        img = img[..., :3]
        if img.dtype != np.uint8:
            img = (255 * (img.astype(float) - img.min()) / max(np.ptp(img), 1e-9)).astype(np.uint8)
        out[name] = np.ascontiguousarray(img)
    return out


def _rand_color(rng) -> np.ndarray:
    return rng.uniform(0, 255, 3)


def gradient(rng, w, h):
    a, b = _rand_color(rng), _rand_color(rng)
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (np.cos(ang) * xx / w + np.sin(ang) * yy / h)
    t = (t - t.min()) / max(np.ptp(t), 1e-6)
    return a + (b - a) * t[..., None]


def plaid(rng, w, h):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((h, w, 3), np.float32) + _rand_color(rng) * 0.5
    for _ in range(rng.integers(2, 5)):
        ang = rng.uniform(0, np.pi)
        freq = rng.uniform(2, 40) / max(w, h)
        s = np.sin(2 * np.pi * freq * (np.cos(ang) * xx + np.sin(ang) * yy) + rng.uniform(0, 6.3))
        out += s[..., None] * _rand_color(rng)[None, None] * 0.3
    return out


def noise(rng, w, h):
    import cv2
    cells = int(rng.integers(2, 40))
    small = rng.uniform(0, 255, (cells, max(2, cells * w // max(h, 1)), 3)).astype(np.float32)
    out = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return out + rng.normal(0, rng.uniform(0, 25), out.shape)


def checkerboard(rng, w, h):
    import cv2
    sq = rng.uniform(8, 80)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, np.pi / 2)
    u = (np.cos(ang) * xx + np.sin(ang) * yy) / sq
    v = (-np.sin(ang) * xx + np.cos(ang) * yy) / sq
    m = ((np.floor(u) + np.floor(v)) % 2)[..., None]
    out = _rand_color(rng) * m + _rand_color(rng) * (1 - m)
    return cv2.GaussianBlur(out.astype(np.float32), (0, 0), rng.uniform(0.3, 1.5))


def shapes(rng, w, h):
    import cv2
    out = np.ascontiguousarray(gradient(rng, w, h).astype(np.uint8))
    for _ in range(rng.integers(5, 40)):
        c = tuple(int(x) for x in _rand_color(rng))
        p = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        s = int(rng.uniform(5, max(w, h) / 3))
        kind = rng.integers(0, 3)
        if kind == 0:
            cv2.circle(out, p, s, c, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(out, p, (p[0] + s, p[1] + int(rng.uniform(5, s + 6))), c, -1)
        else:
            q = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
            cv2.line(out, p, q, c, int(rng.uniform(1, 12)), cv2.LINE_AA)
    return out.astype(np.float32)


def solid(rng, w, h):
    return np.broadcast_to(_rand_color(rng), (h, w, 3)) + rng.normal(0, 3, (h, w, 3))


PROCEDURAL = {"gradient": gradient, "plaid": plaid, "noise": noise, "checkerboard": checkerboard,
              "shapes": shapes, "solid": solid}


class BackgroundSource:
    """Random background images of a fixed size."""

    def __init__(self, width: int, height: int, photos: bool = True, photo_prob: float = 0.4):
        self.width, self.height = int(width), int(height)
        self.photos: Dict[str, np.ndarray] = load_photos() if photos else {}
        self.photo_names: List[str] = sorted(self.photos)
        self.photo_prob = photo_prob if self.photos else 0.0

    def photo(self, rng, name: Optional[str] = None) -> np.ndarray:
        """Random crop (scale, aspect, flip) of a photo, resized, with colour jitter."""
        import cv2
        img = self.photos[name or self.photo_names[rng.integers(len(self.photo_names))]]
        H, W = img.shape[:2]
        frac = rng.uniform(0.3, 1.0)
        aspect = self.width / self.height
        ch = int(max(16, min(H, frac * H, frac * W / aspect)))
        cw = int(max(16, min(W, ch * aspect)))
        y0, x0 = rng.integers(0, H - ch + 1), rng.integers(0, W - cw + 1)
        crop = img[y0:y0 + ch, x0:x0 + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out = cv2.resize(np.ascontiguousarray(crop), (self.width, self.height),
                         interpolation=cv2.INTER_LINEAR).astype(np.float32)
        gain = rng.uniform(0.6, 1.3, 3) * rng.uniform(0.7, 1.2)
        return out * gain + rng.uniform(-30, 30)

    def sample(self, rng) -> np.ndarray:
        """(H,W,3) uint8 background; returns also its kind via ``self.last_kind``."""
        if rng.random() < self.photo_prob:
            self.last_kind = "photo"
            out = self.photo(rng)
        else:
            self.last_kind = str(rng.choice(sorted(PROCEDURAL)))
            out = PROCEDURAL[self.last_kind](rng, self.width, self.height)
        return np.clip(out, 0, 255).astype(np.uint8)
