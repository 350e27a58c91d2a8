"""Training-time image augmentation that moves the keypoints with the pixels (albumentations 2.x).

Every parameter is pinned explicitly: albumentations 2.x changed several defaults (GaussNoise's
std_range, the affine border mode), so relying on defaults would silently change training.

Beyond DREAM's recipe (noise, brightness/contrast, shift/scale/rotate) the pipeline adds what real
cameras do and our renders do not: blur, JPEG artefacts, colour casts, grey images, sensor noise,
occluding cut-outs, and stronger zoom so that close-ups and partly cropped robots are seen.
Keypoints that leave the image keep their (off-image) coordinates; the label maker zeroes them.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from ..errors import InputError


def build_augmenter(strength: str = "strong"):
    """Return an ``albumentations.Compose`` taking ``image`` (HxWx3 uint8) and ``keypoints`` (K,2) xy.

    ``strength``: "dream" (DREAM's three transforms with its original parameters), "strong" (ours,
    the default for training) or "none".
    """
    import albumentations as A
    import cv2

    kp = A.KeypointParams(format="xy", remove_invisible=False, check_each_transform=False)
    if strength == "none":
        return A.Compose([], keypoint_params=kp)
    if strength == "dream":
        return A.Compose([
            # DREAM: variance 10-50 on 0..255 -> std 3.2..7.1 -> fraction of 255
            A.GaussNoise(std_range=(0.0124, 0.0277), mean_range=(0.0, 0.0), per_channel=True,
                         noise_scale_factor=1.0, p=0.5),
            A.RandomBrightnessContrast(brightness_limit=(-0.2, 0.2), contrast_limit=(-0.2, 0.2),
                                       brightness_by_max=False, ensure_safe_range=False, p=0.5),
            # DREAM used a REFLECT_101 border; albumentations 2.x then adds mirrored copies of
            # the keypoints (a variable number), which one-map-per-keypoint labels cannot hold,
            # so the border here is constant (the only deviation from DREAM's recipe).
            A.Affine(translate_percent=(-0.0625, 0.0625), scale=(0.9, 1.1), rotate=(-15, 15),
                     shear=(0.0, 0.0), interpolation=cv2.INTER_LINEAR,
                     border_mode=cv2.BORDER_CONSTANT, fill=0, p=0.5),
        ], keypoint_params=kp)
    if strength != "strong":
        raise InputError("augmentation strength must be none, dream or strong, not %r" % strength)
    return A.Compose([
        # Geometry first. Zoom in up to 2x (close-ups and cropped robots, as real calibration
        # photos are: our first models mistook furniture for the robot on them) and out to 0.75x,
        # half of the draws each way; a constant border because a mirrored (REFLECT) border would
        # paint unlabelled robot parts.
        A.Affine(translate_percent=(-0.12, 0.12), scale=(0.75, 2.0), rotate=(-20, 20),
                 shear=(-5.0, 5.0), interpolation=cv2.INTER_LINEAR, balanced_scale=True,
                 border_mode=cv2.BORDER_CONSTANT, fill=0, keep_ratio=True, p=0.7),
        A.OneOf([
            A.ColorJitter(brightness=(0.7, 1.3), contrast=(0.7, 1.3), saturation=(0.5, 1.5),
                          hue=(-0.08, 0.08), p=1.0),
            A.RandomBrightnessContrast(brightness_limit=(-0.25, 0.25), contrast_limit=(-0.25, 0.25),
                                       brightness_by_max=False, ensure_safe_range=False, p=1.0),
        ], p=0.7),
        A.ToGray(num_output_channels=3, method="weighted_average", p=0.08),
        A.OneOf([
            A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.3, 1.2), p=1.0),
            A.MotionBlur(blur_limit=(3, 7), allow_shifted=False, angle_range=(0, 360),
                         direction_range=(-1.0, 1.0), p=1.0),
        ], p=0.25),
        A.GaussNoise(std_range=(0.01, 0.04), mean_range=(0.0, 0.0), per_channel=True,
                     noise_scale_factor=1.0, p=0.4),
        A.CoarseDropout(num_holes_range=(1, 3), hole_height_range=(0.05, 0.2),
                        hole_width_range=(0.05, 0.2), fill="random_uniform", p=0.25),
        A.ImageCompression(compression_type="jpeg", quality_range=(40, 95), p=0.4),
    ], keypoint_params=kp)


def augment(aug, image: np.ndarray, xy: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Apply ``aug`` to an image and its keypoints (K,2); returns (image, xy) with xy (K,2) float."""
    xy = np.asarray(xy, dtype=np.float32).reshape(-1, 2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError("augment expects an HxWx3 uint8 image, got %s %s"
                         % (image.shape, image.dtype))
    # albumentations cannot carry NaN keypoints: park them far away, restore afterwards
    nan = ~np.all(np.isfinite(xy), axis=1)
    xy_in = np.where(nan[:, None], -1e4, xy)
    out = aug(image=image, keypoints=xy_in)
    xy_out = np.asarray(out["keypoints"], dtype=np.float32).reshape(-1, 2)
    if xy_out.shape[0] != xy.shape[0]:
        raise InputError("augmentation dropped keypoints (%d -> %d)" % (xy.shape[0], xy_out.shape[0]))
    xy_out[nan] = np.nan
    return out["image"], xy_out
