"""DREAM's metrics on hand-made cases whose answers are known in closed form."""
from __future__ import annotations

import numpy as np
import pytest

from dream_ros.errors import InputError
from dream_ros.evaluation import metrics as M

SIZE = (640, 480)


def _grid(n_frames=5, k=7, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(20, 600, (n_frames, k)), rng.uniform(20, 460, (n_frames, k))], axis=-1)


def test_pck_perfect_reaches_dreams_ceiling():
    gt = _grid()
    m = M.keypoint_pck(gt.copy(), gt, SIZE)
    # y(0) = 0 because the test is error < t; then full: (0.005 + 19.98) / 20
    assert m.auc == pytest.approx(0.99925, abs=1e-12)
    assert m.num_gt_in_frame == m.num_found_in_frame == gt.shape[0] * gt.shape[1]
    assert m.mean_px == 0.0 and m.median_px == 0.0 and m.std_px == 0.0


@pytest.mark.parametrize("d", [0.505, 5.005, 12.345])
def test_pck_uniform_shift_gives_analytic_auc(d):
    gt = _grid()
    pred = gt.copy()
    pred[..., 0] += d * 0.6
    pred[..., 1] -= d * 0.8          # L2 shift of exactly d
    m = M.keypoint_pck(pred, gt, SIZE)
    # y(t) = n for t > d on the grid 0.01 i, i < 2000; with d between grid points the trapezoid
    # picks up half a step at the jump: AUC = (19.99 - d_hi + 0.005) / 20 with d_hi the first t > d.
    d_hi = np.ceil(d / 0.01) * 0.01
    assert m.auc == pytest.approx((19.99 - d_hi + 0.005) / 20, abs=1e-9)
    assert m.mean_px == pytest.approx(d) and m.std_px == pytest.approx(0.0, abs=1e-9)


def test_pck_shift_beyond_range_scores_zero():
    gt = _grid()
    assert M.keypoint_pck(gt + 30.0, gt, SIZE).auc == 0.0


def test_pck_missing_in_frame_keypoints_count_as_failures():
    gt = _grid(n_frames=4, k=5)
    pred = gt.copy()
    pred[:2] = np.nan                        # half the frames: nothing detected
    m = M.keypoint_pck(pred, gt, SIZE)
    assert m.auc == pytest.approx(0.99925 / 2, abs=1e-12)
    assert m.num_gt_in_frame == 20 and m.num_found_in_frame == 10 and m.found_fraction == 0.5
    assert m.mean_px == 0.0                  # statistics cover found keypoints only


def test_pck_out_of_frame_keypoints_are_excluded_with_inclusive_border():
    gt = np.array([[[0.0, 0.0], [640.0, 480.0], [-0.01, 100.0], [100.0, 480.01], [700.0, -5.0]]])
    pred = gt.copy()
    pred[0, 2:] = np.nan                     # out-of-frame keypoints not detected: no penalty
    m = M.keypoint_pck(pred, gt, SIZE)
    assert m.num_gt_in_frame == 2            # both borders count as in frame (inclusive)
    assert m.auc == pytest.approx(0.99925, abs=1e-12)
    # a detection of an out-of-frame keypoint is ignored as well, however wrong
    pred[0, 4] = [0.0, 0.0]
    assert M.keypoint_pck(pred, gt, SIZE).auc == pytest.approx(0.99925, abs=1e-12)


def test_pck_no_in_frame_keypoint_gives_none():
    gt = np.full((1, 3, 2), -50.0)
    m = M.keypoint_pck(np.full_like(gt, np.nan), gt, SIZE)
    assert m.auc is None and m.num_gt_in_frame == 0 and m.mean_px is None


def test_viability_is_strict():
    gt = np.zeros((3, 5, 2))
    gt[:] = [100.0, 100.0]
    gt[1, :2] = [0.0, 100.0]                 # on the border: not strictly inside -> 3 left: not viable
    gt[2, :1] = [640.0, 479.0]               # one on the border: 4 left: viable
    assert M.viable_frames(gt, SIZE).tolist() == [True, False, True]


def _rigid(angle_deg, t):
    from scipy.spatial.transform import Rotation
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("z", angle_deg, degrees=True).as_matrix()
    T[:3, 3] = t
    return T


def test_add_error_perfect_translated_and_used_subset():
    rng = np.random.default_rng(1)
    pb = rng.uniform(-0.5, 0.5, (7, 3))
    T = _rigid(30.0, [0.1, -0.2, 1.5])
    pc = pb @ T[:3, :3].T + T[:3, 3]
    assert M.add_error(T, pb, pc) == pytest.approx(0.0, abs=1e-12)
    T_off = T.copy()
    T_off[:3, 3] += [0.003, 0.0, 0.004]      # pure translation error of 5 mm
    assert M.add_error(T_off, pb, pc) == pytest.approx(0.005)
    used = np.zeros(7, bool)
    used[:4] = True
    pc_bad = pc.copy()
    pc_bad[4:] += 1.0                        # unused keypoints do not enter DREAM's mean
    assert M.add_error(T_off, pb, pc_bad, used) == pytest.approx(0.005)
    assert np.isnan(M.add_error(None, pb, pc))


def test_add_auc_of_constant_add_is_analytic():
    # all frames found with ADD = a between grid points: c(t) = 1 from the first t >= a, plus half a
    # step at the jump -> AUC = (0.09999 - a_hi + 0.5e-5) / 0.1
    a = 0.020005
    m = M.add_metrics(np.full(10, a), np.ones(10, bool))
    assert m.auc == pytest.approx((0.09999 - 0.02001 + 0.5e-5) / 0.1, abs=1e-9)
    m0 = M.add_metrics(np.zeros(10), np.ones(10, bool))
    assert m0.auc == pytest.approx(0.9999, abs=1e-12)   # c(0) = 1 because the test is <=
    assert m0.mean_m == 0.0 and m0.num_failed_viable == 0


def test_add_failed_frames_count_against_viable():
    add = np.array([0.0, 0.0, np.nan, np.nan])
    m = M.add_metrics(add, np.ones(4, bool))
    assert m.auc == pytest.approx(0.9999 / 2, abs=1e-12)
    assert (m.num_found, m.num_viable, m.num_failed_viable) == (2, 4, 2)
    assert m.mean_m == 0.0 and m.median_m == 0.0
    assert m.num_found_beyond_max == 0


def test_add_counts_the_wrong_poses_apart_from_the_failures():
    m = M.add_metrics(np.array([0.01, 0.5, 0.1, np.nan, 2.0]), np.ones(5, bool))
    assert (m.num_found, m.num_failed_viable, m.num_found_beyond_max) == (4, 1, 2)


def test_add_found_non_viable_frames_still_count_in_numerator():
    add = np.array([0.0, 0.0, 0.0])
    viable = np.array([True, True, False])
    m = M.add_metrics(add, viable)
    assert m.curve[-1] == pytest.approx(1.5)   # DREAM's quirk: numerator over all found frames
    assert m.num_failed_viable == 0            # not viable - found = -1
    failed = M.add_metrics(np.array([np.nan, 0.0, 0.0]), viable)
    assert (failed.num_found, failed.num_viable, failed.num_failed_viable) == (2, 2, 1)
    assert M.add_metrics(add, np.zeros(3, bool)).auc is None


def test_add_beyond_threshold_scores_zero_and_units_matter():
    # 3 cm expressed in metres scores well; the same error read as "3" (centimetres taken for
    # metres) falls outside the 0.1 range: why the reader converts cm datasets to metres.
    assert M.add_metrics([0.030005], [True]).auc == pytest.approx((0.09999 - 0.03001 + 0.5e-5) / 0.1, abs=1e-9)
    assert M.add_metrics([3.0], [True]).auc == 0.0


def test_per_keypoint_table():
    gt = _grid(n_frames=3, k=2)
    pred = gt.copy()
    pred[:, 1, 0] += 2.0
    pred[0, 1] = np.nan
    rows = M.per_keypoint_table(["a", "b"], pred, gt, SIZE)
    assert rows[0]["keypoint"] == "a" and rows[0]["mean_px"] == 0.0 and rows[0]["found"] == 3
    assert rows[1]["found"] == 2 and rows[1]["mean_px"] == pytest.approx(2.0)
    assert rows[1]["found_fraction"] == pytest.approx(2 / 3)


def test_by_camera_distance_scores_each_bin_on_its_own_frames():
    gt = _grid(n_frames=4, k=7)
    pred = gt.copy()
    pred[2:, :, 0] += 50.0                   # the far frames' keypoints all miss PCK's range
    add = np.array([0.0, 0.0, np.nan, 0.5])  # far: one failure, one wrong pose
    rows = M.by_camera_distance([0.8, 0.9, 2.2, 2.4], pred, gt, add, np.ones(4, bool), SIZE)
    assert [(r["min_m"], r["max_m"], r["frames"]) for r in rows] == [(0.0, 1.0, 2), (2.0, 2.5, 2)]
    near, far = rows
    assert near["pck_auc"] == pytest.approx(0.99925) and near["add_auc"] == pytest.approx(0.9999)
    assert far["pck_auc"] == 0.0 and far["add_auc"] == 0.0
    assert (far["failed_viable"], far["beyond_max"]) == (1, 1)
    with pytest.raises(InputError):
        M.by_camera_distance([1.0], pred, gt, add, np.ones(4, bool), SIZE)
    assert M.distance_bin_label(near) == "0-1 m"
    open_bin = {"min_m": 3.0, "max_m": float("inf")}
    assert M.distance_bin_label(open_bin) == ">= 3 m"
    assert M.distance_bin_label(dict(open_bin, max_m=None)) == ">= 3 m"   # read back from JSON


def test_bad_shapes_raise_input_error():
    with pytest.raises(InputError):
        M.keypoint_pck(np.zeros((3, 2)), np.zeros((4, 2)), SIZE)
    with pytest.raises(InputError):
        M.add_metrics([0.1, 0.2], [True])
    with pytest.raises(InputError):
        M.viable_frames(np.zeros((3, 3)), SIZE)
