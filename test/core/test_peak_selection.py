"""Choosing each keypoint's peak with the pose (peak_selection.py), alone and in the Calibrator:
a wrong strongest peak and an ambiguous keypoint are corrected when their true peaks are among
the candidates, and nothing changes when no candidate agrees better."""
from __future__ import annotations

import numpy as np
import pytest

from dream_ros.calibration import Calibrator
from dream_ros.peak_selection import nearest_candidates, reselect_peaks
from dream_ros.pnp import solve_pnp
from dream_ros.types import Detections
from dream_ros.visualize import project

from geometry_scenes import HEIGHT, K, WIDTH, look_at, panda

T_TRUE = look_at([1.4, 0.6, 0.9], [0.0, 0.0, 0.4])
JOINTS = np.array([0.3, -0.4, 0.2, -2.0, 0.1, 1.8, 0.6])
WRONG, AMBIGUOUS = 5, 3            # keypoint indices: a wrong strongest peak, a dropped one


def scene():
    robot = panda()
    pts = robot.keypoints_3d(JOINTS)
    truth = project(pts, T_TRUE, K)
    uv = truth.copy()
    uv[WRONG] += [45.0, -30.0]                       # a look-alike part, higher than the truth
    uv[AMBIGUOUS] = np.nan                           # two near-equal peaks: dropped
    cands = [np.array([[u, v, 1.0]]) for u, v in truth]
    cands[WRONG] = np.array([[*uv[WRONG], 0.9], [*truth[WRONG], 0.7]])
    cands[AMBIGUOUS] = np.array([[*(truth[AMBIGUOUS] + [0.0, 40.0]), 0.8],
                                 [*truth[AMBIGUOUS], 0.75]])
    return robot, pts, truth, uv, cands


def solver(pts):
    return lambda u: solve_pnp(pts, u, K), lambda p, T: project(p, T, K)


def test_the_pose_picks_the_true_peaks():
    robot, pts, truth, uv, cands = scene()
    first = solve_pnp(pts, uv, K)
    assert first.ok and first.num_inliers == 5                        # 6 present, 1 wrong
    chosen, est = reselect_peaks(pts, uv, cands, first, *solver(pts))
    np.testing.assert_allclose(chosen, truth, atol=1e-9)
    assert est.ok and est.num_inliers == 7
    assert est.reprojection_error_px < 1e-3


def test_nothing_changes_without_a_better_candidate():
    robot, pts, truth, uv, cands = scene()
    first = solve_pnp(pts, uv, K)
    far = [c if k not in (WRONG, AMBIGUOUS) else c[:1] for k, c in enumerate(cands)]
    chosen, est = reselect_peaks(pts, uv, far, first, *solver(pts))
    assert chosen is uv and est is first
    failed = solve_pnp(pts[:3], uv[:3], K)                            # no pose: nothing to do
    assert reselect_peaks(pts, uv, cands, failed, *solver(pts))[1] is failed
    assert reselect_peaks(pts, uv, None, first, *solver(pts))[1] is first


def test_nearest_candidates_respects_the_gate():
    uv = np.array([[10.0, 10.0], [np.nan, np.nan]])
    cands = [np.array([[30.0, 10.0, 1.0], [12.0, 10.0, 0.5]]), np.array([[50.0, 50.0, 1.0]])]
    out = nearest_candidates(np.array([[11.0, 10.0], [80.0, 50.0]]), uv, cands, gate_px=5.0)
    np.testing.assert_allclose(out[0], [12.0, 10.0])
    assert np.isnan(out[1]).all()                                    # 30 px away: left missing


class CandidateDetector:
    def __init__(self, uv, cands, names):
        self.uv, self.cands, self.names = uv, cands, names

    def detect(self, rgb, return_belief=False):
        found = np.all(np.isfinite(self.uv), axis=1)
        return Detections(self.names, self.uv.copy(), found.astype(float), found,
                          (WIDTH, HEIGHT), candidates=self.cands)


def test_calibrator_reports_the_chosen_keypoints():
    robot, pts, truth, uv, cands = scene()
    cal = Calibrator(robot, CandidateDetector(uv, cands, list(robot.keypoint_names)))
    joints = dict(zip(robot.joint_names, JOINTS))
    det, est = cal.process(np.zeros((HEIGHT, WIDTH, 3), np.uint8), joints, K)
    assert est.ok and est.num_inliers == 7
    assert det.detected.all() and est.extras["keypoints_detected"] == 7
    np.testing.assert_allclose(det.uv, truth, atol=1e-6)
    from dream_ros.frames import pose_error
    dt, dr = pose_error(est.camera_T_base, T_TRUE)
    assert dt < 1e-4 and dr < 1e-3
