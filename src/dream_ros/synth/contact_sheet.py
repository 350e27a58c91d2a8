"""A grid of dataset frames with their keypoint labels drawn on, to see what the network sees."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np


def make_contact_sheet(directory: Union[str, Path], out_png: Union[str, Path], robot: Optional[str] = None,
                       n: int = 16, cols: int = 4, tile: int = 240, labels: bool = True) -> Path:
    """Save the first ``n`` frames of an NDDS directory as a ``cols``-wide grid of ``tile``-px-high
    tiles. Keypoints: green = visible, orange = occluded, none drawn when out of frame."""
    import cv2
    from ..data.ndds import NddsDataset, atomic_write_bytes, encode_image
    ds = NddsDataset(directory, robot_name=robot)
    n = min(n, len(ds))
    tiles = []
    for i in range(n):
        fr = ds[i]
        img = np.ascontiguousarray(ds.load_image(i))
        if labels:
            for k, (u, v) in enumerate(fr.projected):
                if fr.in_frame is not None and not fr.in_frame[k]:
                    continue
                occ = fr.occluded is not None and fr.occluded[k]
                c = (255, 150, 0) if occ else (0, 255, 0)
                p = (int(round(u)), int(round(v)))
                cv2.circle(img, p, max(2, img.shape[0] // 100), c, -1, cv2.LINE_AA)
        h, w = img.shape[:2]
        tiles.append(cv2.resize(img, (int(round(w * tile / h)), tile), interpolation=cv2.INTER_AREA))
    if not tiles:
        raise ValueError("no frames in %s" % directory)
    tw = tiles[0].shape[1]
    rows = (len(tiles) + cols - 1) // cols
    sheet = np.full((rows * tile + (rows - 1) * 2, cols * tw + (cols - 1) * 2, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet[r * (tile + 2):r * (tile + 2) + tile, c * (tw + 2):c * (tw + 2) + t.shape[1]] = t[:, :tw]
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_png, encode_image(sheet, "png"))
    return out_png
