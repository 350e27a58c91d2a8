"""Training data: NDDS frames (ours or DREAM's) -> (network input tensor, keypoints at output scale).

The index re-scans its directories on demand (``refresh``) and parses only frames it has not seen,
so training can start while the renderer is still writing a dataset. The train/validation split is
a hash of each frame's path, so it stays fixed as the dataset grows and across resumes.

Belief-map labels are made in the training loop (``labels.make_targets``), not here, so the loop
can anneal the Gaussian width without restarting the loader workers.
"""
from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError

# DREAM's normalisation: /255 then (v - 0.5) / 0.5
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
# the model file records this; letterbox keeps the aspect (4:3 renders and cameras need no padding)
PREPROCESSING = "letterbox"


@dataclass
class FrameRecord:
    image: str                # absolute path
    xy: np.ndarray            # (K,2) raw pixels, float32 (NaN if the keypoint is absent)
    raw_size: Tuple[int, int]  # (w, h) of the image the labels refer to
    key: str                  # dataset-relative name used for the split hash
    source: str = ""          # the --data directory it came from (per-set sampling weights)


def is_validation(key: str, val_fraction: float) -> bool:
    """Stable split: the same frame is in the same split across re-scans, resumes and machines."""
    return (zlib.crc32(key.encode("utf-8")) % 100000) < int(round(val_fraction * 100000))


def _image_for(json_path: Path) -> Optional[Path]:
    stem = json_path.name[:-len(".json")]
    for ext in (".rgb.jpg", ".rgb.png", ".jpg", ".png"):
        p = json_path.with_name(stem + ext)
        if p.exists():
            return p
    return None


def _camera_size(directory: Path) -> Optional[Tuple[int, int]]:
    path = directory / "_camera_settings.json"
    if not path.exists():
        return None
    try:
        cam = json.loads(path.read_text())["camera_settings"][0]["captured_image_size"]
        return int(cam["width"]), int(cam["height"])
    except (KeyError, IndexError, ValueError, TypeError):
        raise InputError("%s has no camera_settings[0].captured_image_size" % path)


def _read_keypoints(json_path: Path, object_class: str, names: Sequence[str],
                    derive_with=None) -> Optional[np.ndarray]:
    """(K,2) projected_location in NDDS keypoint order given by ``names``; None if unreadable.
    Keypoints the frame lacks are derived from its joint state and base pose when ``derive_with``
    (a RobotModel that has them) is given (``data.derived_keypoints``), else InputError.

    A small NDDS reader of our own (only 2D labels are needed) so a directory still being written
    can be indexed incrementally and half-written files skipped instead of failing.
    """
    try:
        data = json.loads(json_path.read_text())
    except (OSError, ValueError):
        return None          # being written right now; picked up at the next refresh
    objects = data.get("objects") or []
    obj = None
    for o in objects:
        if o.get("class") == object_class:
            obj = o
            break
    if obj is None:
        return None
    by_name = {k.get("name"): k for k in obj.get("keypoints") or []}
    xy = np.full((len(names), 2), np.nan, dtype=np.float32)
    missing = []
    for i, n in enumerate(names):
        k = by_name.get(n)
        if k is None:
            missing.append(i)
            continue
        xy[i] = k["projected_location"][:2]
    if missing and derive_with is None:
        raise InputError("%s: keypoints %s missing (has %s)"
                         % (json_path, [names[i] for i in missing], sorted(by_name)))
    if missing:
        from ..data.derived_keypoints import derive_keypoints, frame_state
        joints, camera_T_base, K = frame_state(data, obj)
        recorded = {n: k["location"] for n, k in by_name.items() if "location" in k}
        xy[missing] = derive_keypoints(derive_with, [names[i] for i in missing], joints,
                                       camera_T_base, K, recorded, where=str(json_path))[0]
    return xy


class FrameIndex:
    """All frames of several NDDS directories; ``refresh()`` adds frames written since last time."""

    def __init__(self, dirs: Sequence[str], keypoint_names: Sequence[str], object_class: str = "panda",
                 min_age_s: float = 2.0, derive_with=None):
        if not dirs:
            raise InputError("no training data directory given")
        self.dirs = [Path(d) for d in dirs]
        for d in self.dirs:
            if not d.is_dir():
                raise InputError("data directory %s does not exist" % d)
        self.names = list(keypoint_names)
        self.derive_with = derive_with   # RobotModel: derive keypoints the frames lack (see above)
        self.object_class = object_class
        self.min_age_s = min_age_s       # skip files modified this recently (still being written)
        self._records: Dict[str, FrameRecord] = {}
        self._rejected: set = set()

    def refresh(self) -> int:
        """Scan the directories; returns the number of new frames."""
        import time
        now = time.time()
        added = 0
        for d in self.dirs:
            cam_size = _camera_size(d)
            try:
                entries = os.listdir(d)
            except OSError:
                continue
            for name in sorted(entries):
                if not name.endswith(".json") or not name[:1].isdigit():
                    continue
                path = d / name
                key = "%s/%s" % (d.name, name)
                if str(path) in self._records or str(path) in self._rejected:
                    continue
                try:
                    if now - path.stat().st_mtime < self.min_age_s:
                        continue
                except OSError:
                    continue
                image = _image_for(path)
                if image is None:
                    continue
                xy = _read_keypoints(path, self.object_class, self.names, self.derive_with)
                if xy is None:
                    continue
                size = cam_size
                if size is None:
                    import cv2
                    im = cv2.imread(str(image))
                    if im is None:
                        continue
                    size = (im.shape[1], im.shape[0])
                self._records[str(path)] = FrameRecord(str(image), xy, size, key, str(d))
                added += 1
        return added

    def split(self, val_fraction: float, max_val: Optional[int] = None
              ) -> Tuple[List[FrameRecord], List[FrameRecord]]:
        train, val = [], []
        for path in sorted(self._records):
            r = self._records[path]
            (val if is_validation(r.key, val_fraction) else train).append(r)
        if max_val is not None and len(val) > max_val:
            # evenly spread subset, stable as long as the set does not change much
            idx = np.linspace(0, len(val) - 1, max_val).round().astype(int)
            val = [val[i] for i in idx]
        return train, val

    def __len__(self) -> int:
        return len(self._records)


def load_rgb(path: str) -> np.ndarray:
    import cv2
    im = cv2.imread(path, cv2.IMREAD_COLOR)
    if im is None:
        raise InputError("cannot read image %s" % path)
    return cv2.cvtColor(im, cv2.COLOR_BGR2RGB)


def to_input(image: np.ndarray, xy: np.ndarray, input_size: Tuple[int, int], pre=None
             ) -> Tuple[np.ndarray, np.ndarray]:
    """Raw image -> net input with the exact Preprocessor the detector uses; keypoints mapped alike."""
    h, w = image.shape[:2]
    if (w, h) == tuple(input_size):
        return image, xy                # our renders are already at the input size
    pre = pre or make_preprocessor(tuple(input_size))
    img, geo = pre.image(image)
    return img, geo.to_input(xy).astype(np.float32)


def make_preprocessor(input_size, mode: str = PREPROCESSING, half_pixel=None,
                      mean=IMAGE_MEAN, std=IMAGE_STD):
    from ..network.preprocess import Preprocessor
    return Preprocessor(mode, tuple(input_size), tuple(mean), tuple(std), half_pixel=half_pixel)


def image_to_tensor(image: np.ndarray, mean=IMAGE_MEAN, std=IMAGE_STD):
    import torch
    if not image.flags.writeable:          # PIL-backed arrays are read-only
        image = image.copy()
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    sd = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return t.sub_(m).div_(sd)


class KeypointDataset:
    """torch Dataset over FrameRecords: returns (image CHW float, xy_out (K,2), xy_raw (K,2), scale).

    ``xy_out`` are the keypoints in output-map cells after augmentation (NaN if absent);
    ``scale`` (4,) maps output cells back to raw pixels (raw = xy * scale[:2] + scale[2:]) for the
    un-augmented validation frames.
    """

    def __init__(self, records: Sequence[FrameRecord], input_size: Tuple[int, int],
                 output_size: Tuple[int, int], augment: str = "none",
                 preprocessing: str = PREPROCESSING, half_pixel=None,
                 mean=IMAGE_MEAN, std=IMAGE_STD, zoom_prob: float = 0.0,
                 chain_order: Optional[Sequence[int]] = None):
        self.records = list(records)
        # fraction of augmented samples cropped around the robot as the detector's zoom pass
        # does; chain_order (RobotModel.keypoint_chain_order) tells its half-arm crops apart
        self.zoom_prob = float(zoom_prob)
        self.chain_order = None if chain_order is None else [int(k) for k in chain_order]
        self.pre = make_preprocessor(input_size, preprocessing, half_pixel, mean, std)
        self.mean, self.std = tuple(mean), tuple(std)
        self.input_size = tuple(input_size)
        self.output_size = tuple(output_size)
        self.augment = augment
        self._aug = None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        import torch
        r = self.records[i]
        image = load_rgb(r.image)
        h, w = image.shape[:2]
        xy_raw = r.xy.copy()
        if (w, h) != tuple(r.raw_size):       # labels refer to the captured size
            xy_raw_img = xy_raw * np.array([w / r.raw_size[0], h / r.raw_size[1]], dtype=np.float32)
        else:
            xy_raw_img = xy_raw
        if self.augment != "none" and self.zoom_prob > 0 and np.random.random() < self.zoom_prob:
            from ..network.zoom import random_training_crop
            W_in, H_in = self.input_size
            image, xy_raw_img = random_training_crop(image, xy_raw_img, W_in / H_in,
                                                     np.random.default_rng(np.random.randint(2 ** 31)),
                                                     self.chain_order)
        image, xy_in = to_input(image, xy_raw_img, self.input_size, self.pre)
        if self.augment != "none":
            if self._aug is None:       # built lazily inside the worker process
                from ..data.augment import build_augmenter
                self._aug = build_augmenter(self.augment)
            from ..data.augment import augment
            image, xy_in = augment(self._aug, image, xy_in)
        W, H = self.input_size
        w_out, h_out = self.output_size
        xy_out = xy_in * np.array([w_out / W, h_out / H], dtype=np.float32)
        # output cells -> raw pixels: raw = xy_out * scale[:2] + scale[2:] (exact preprocessing inverse)
        if (w, h) == (W, H):
            gs, gb = np.ones(2), np.zeros(2)
        else:
            g = self.pre.geometry((w, h))
            gs, gb = np.asarray(g.scale), np.asarray(g.shift)
        s_in = np.array([W / w_out, H / h_out])
        img_to_raw = np.array([r.raw_size[0] / w, r.raw_size[1] / h])
        scale = np.concatenate([s_in / gs * img_to_raw, -gb / gs * img_to_raw]).astype(np.float32)
        raw_size = np.array(r.raw_size, dtype=np.float32)
        return (image_to_tensor(image, self.mean, self.std), torch.from_numpy(xy_out), torch.from_numpy(xy_raw),
                torch.from_numpy(scale), torch.from_numpy(raw_size))
