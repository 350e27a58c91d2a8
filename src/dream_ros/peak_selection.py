"""Choosing each keypoint's peak with the robot's pose, not by height alone.

A belief map often has a second peak where another part of the robot looks alike (the wrist
links, either side of a joint); the detector takes the highest, or none when the two are close
(DREAM's ambiguity test). The joint angles settle what the image cannot: once a pose is solved,
each keypoint's projection says which of its peaks is the keypoint. ``reselect_peaks`` takes, for
every keypoint, the candidate peak nearest its projection (within ``gate_px``), solves again and
keeps the new keypoints only when more of them agree with the new pose (more inliers, or as many
with a smaller reprojection error). A keypoint with no candidate near its projection keeps its
detection (or stays missing).

Measured with the session-4 model on the 300-frame synthetic test set (``eval --candidates 0``
against the default 3, docs/evaluation.md): PCK AUC 0.640 -> 0.648, ADD AUC 0.367 -> 0.368. The
pose is only replaced when it gains agreement, so a good frame is left alone. A frame whose first
solve fails stays failed: proposing a pose from all candidates at once gave 14 more of the 300
frames a pose, mostly wrong ones (ADD AUC +0.001, PCK AUC -0.002), so that was left out.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import numpy as np

from .types import PoseEstimate

DEFAULT_GATE_PX = 10.0      # the robust PnP's inlier threshold
ROUNDS = 2                  # re-solve at most this often (a second round rarely changes more)


def _better(new: PoseEstimate, old: PoseEstimate) -> bool:
    if not new.ok:
        return False
    if new.num_inliers != old.num_inliers:
        return new.num_inliers > old.num_inliers
    rms_new, rms_old = new.reprojection_error_px, old.reprojection_error_px
    return rms_new is not None and (rms_old is None or rms_new < rms_old)


def nearest_candidates(projected: np.ndarray, uv: np.ndarray,
                       candidates: List[np.ndarray], gate_px: float) -> np.ndarray:
    """uv with each keypoint replaced by its candidate peak nearest ``projected`` (K,2), where
    one lies within ``gate_px``; rows without such a candidate are kept as they are."""
    out = np.array(uv, dtype=float, copy=True)
    for k, cand in enumerate(candidates):
        if cand is None or len(cand) == 0 or not np.all(np.isfinite(projected[k])):
            continue
        d = np.linalg.norm(cand[:, :2] - projected[k], axis=1)
        j = int(np.argmin(d))
        if d[j] <= gate_px:
            out[k] = cand[j, :2]
    return out


def solve_choosing_peaks(points_3d: np.ndarray, uv: np.ndarray,
                         candidates: Optional[List[np.ndarray]],
                         solve: Callable[[np.ndarray], PoseEstimate],
                         project: Callable[[np.ndarray, np.ndarray], np.ndarray],
                         gate_px: float = DEFAULT_GATE_PX) -> Tuple[np.ndarray, PoseEstimate]:
    """(keypoints, estimate): ``solve(uv)``, then, when there are candidate peaks, the choice
    among them by the pose (``reselect_peaks``). The node, ``eval`` and ``bench`` all use it."""
    return reselect_peaks(points_3d, uv, candidates, solve(uv), solve, project, gate_px)


def reselect_peaks(points_3d: np.ndarray, uv: np.ndarray, candidates: Optional[List[np.ndarray]],
                   estimate: PoseEstimate, solve: Callable[[np.ndarray], PoseEstimate],
                   project: Callable[[np.ndarray, np.ndarray], np.ndarray],
                   gate_px: float = DEFAULT_GATE_PX) -> Tuple[np.ndarray, PoseEstimate]:
    """(keypoints, estimate) after choosing peaks with the pose (module docstring).

    points_3d (K,3) base frame; uv (K,2), NaN = missing; candidates per keypoint (M,>=2) in the
    same pixel frame as uv; solve(uv) -> PoseEstimate; project(points_3d, camera_T_base) ->
    (K,2) pixels. Returns the inputs unchanged when there is no pose or nothing better.
    """
    if candidates is None or not estimate.ok:
        return uv, estimate
    best_uv, best = uv, estimate
    for _ in range(ROUNDS):
        proposal = nearest_candidates(project(points_3d, best.camera_T_base), best_uv,
                                      candidates, gate_px)
        if np.array_equal(np.isnan(proposal), np.isnan(best_uv)) and \
                np.allclose(np.nan_to_num(proposal), np.nan_to_num(best_uv)):
            break
        trial = solve(proposal)
        if not _better(trial, best):
            break
        best_uv, best = proposal, trial
    return best_uv, best
