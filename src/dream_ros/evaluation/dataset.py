"""NDDS folders (``data.ndds.NddsDataset``) as evaluation frames, in the robot's keypoint order."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .runner import EvalFrame


@dataclass
class EvalDataset:
    frames: List[EvalFrame]
    K: np.ndarray                    # the folder's intrinsics (frames may carry their own)
    image_size: Tuple[int, int]      # raw (W, H) from _camera_settings.json: what the metrics use


def load_eval_frames(directory, keypoint_names: Sequence[str], robot_name: Optional[str] = None,
                     limit: Optional[int] = None, derive_with=None) -> EvalDataset:
    """Read the first ``limit`` frames (all by default); 3D points stay in the dataset's units.
    ``derive_with``: a RobotModel whose keypoints the frames may lack (``NddsDataset``)."""
    from ..data.ndds import NddsDataset
    ds = NddsDataset(directory, robot_name=robot_name, keypoint_names=list(keypoint_names),
                     derive_with=derive_with)
    n = len(ds) if limit is None else min(int(limit), len(ds))
    frames = []
    for i in range(n):
        f = ds[i]
        frames.append(EvalFrame(f.name, str(f.image_path), f.projected, f.location,
                                f.joints or None, np.asarray(f.K, float)))
    return EvalDataset(frames, ds.K, ds.image_size)
