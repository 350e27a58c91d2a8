"""Validation through the product's pipeline, for choosing the checkpoint to ship.

The epoch validation (``loop.evaluate``) scores one network pass on the labelled frames. The
product runs more than that: the detector's zoom pass, the choice of peaks by the pose, and PnP.
Checkpoints that tie there can differ in what users get. With ``--val-pipeline-data DIR`` (an
NDDS set at the camera resolution, e.g. 640x480) each validation also runs the ``eval``
pipeline on DIR (``evaluation.runner``) and the best checkpoint is the one with the highest
PCK AUC + ADD AUC there, the issue's two target figures.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Optional

import numpy as np


def pipeline_metrics(net, config, data_dir: str, limit: Optional[int] = None
                     ) -> Dict[str, Any]:
    """pipeline_pck_auc, pipeline_add_auc, pipeline_median_px and pipeline_score (their sum) of
    ``net`` (a copy runs, on the CPU) described by the ModelConfig ``config`` on ``data_dir``,
    and pipeline_keypoint_median_px: per keypoint (model order), the median error in pixels of
    the found in-frame ones (NaN where none was found)."""
    from ..evaluation import metrics
    from ..evaluation.dataset import load_eval_frames
    from ..evaluation.runner import (DetectorKeypoints, evaluate_frames, metric_keypoints,
                                     resolve_units)
    from ..network.detector import KeypointDetector
    from ..robot import RobotModel
    module = getattr(net, "module", net)              # DistributedDataParallel wraps the net
    # one zoom view: the default seven cost training three times the validation time, and the
    # checkpoints' order by one view is what matters here
    detector = KeypointDetector((copy.deepcopy(module).cpu(), config), device="cpu",
                                backend="torch", zoom_views=1)
    robot = RobotModel.load(config.robot)
    names = list(robot.keypoint_names)
    ds = load_eval_frames(data_dir, names, robot_name=robot.name, limit=limit, derive_with=robot)
    units = resolve_units("auto", ds.frames, robot)
    # PCK and ADD over the keypoints eval scores (DREAM's 7 for panda_extended), so runs with
    # more keypoints compare with the rest
    metric_index = [names.index(n) for n in metric_keypoints(robot)]
    res = evaluate_frames(ds.frames, DetectorKeypoints(detector, names), robot, ds.K,
                          ds.image_size, units, metric_index=metric_index)
    uv_pred = np.stack([r.uv_pred for r in res])
    uv_gt = np.stack([r.truth.uv for r in res])
    km = metrics.keypoint_pck(uv_pred[:, metric_index], uv_gt[:, metric_index], ds.image_size)
    am = metrics.add_metrics([r.add_m for r in res], [r.viable for r in res])
    pck, add = float(km.auc or 0.0), float(am.auc or 0.0)
    order = [names.index(n) for n in config.keypoint_names]
    per_keypoint = [row.get("median_px") for row in
                    metrics.per_keypoint_table(names, uv_pred, uv_gt, ds.image_size)]
    return {"pipeline_pck_auc": pck, "pipeline_add_auc": add,
            "pipeline_median_px": float(km.median_px) if km.median_px is not None else float("nan"),
            "pipeline_score": pck + add,
            "pipeline_keypoint_median_px": [float("nan") if per_keypoint[i] is None
                                            else float(per_keypoint[i]) for i in order]}
