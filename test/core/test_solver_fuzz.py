"""Property-based fuzzing (hypothesis) of the solvers: ``solve_pnp``, ``MultiFrameSolver`` and the
``Calibrator`` with random and malformed input. The contract (dream_ros.pnp / multiframe /
calibration docstrings): bad arguments raise ``InputError`` (``ConfigError`` for options), a
failed estimate is a value; nothing else escapes, and an "ok" estimate is a finite rigid
transform with a finite covariance. Issue #10, "Fuzzing"."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from dream_ros.calibration import Calibrator
from dream_ros.errors import ConfigError, InputError
from dream_ros.multiframe import MultiFrameSolver
from dream_ros.pnp import solve_pnp
from dream_ros.types import Detections, PoseEstimate

K_GOOD = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
wild = st.floats(allow_nan=True, allow_infinity=True, width=64)
tame = st.floats(-5.0, 5.0, allow_nan=False, width=64)
pixels = st.one_of(st.floats(-2000.0, 2000.0, width=64), st.just(float("nan")))


def arrays(n_min, n_max, cols, elements):
    return st.integers(n_min, n_max).flatmap(
        lambda n: st.lists(st.lists(elements, min_size=cols, max_size=cols), min_size=n,
                           max_size=n))


def check_estimate(est, n_given=None):
    assert isinstance(est, PoseEstimate) and isinstance(est.status, str)
    if est.ok:
        T = est.camera_T_base
        assert T.shape == (4, 4) and np.all(np.isfinite(T))
        R = T[:3, :3]
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-6) and np.linalg.det(R) > 0
        assert est.covariance is None or (est.covariance.shape == (6, 6)
                                          and np.all(np.isfinite(est.covariance)))
        assert est.reprojection_error_px is None or np.isfinite(est.reprojection_error_px)
    else:
        assert est.reason
    if n_given is not None and est.inliers is not None:
        assert len(est.inliers) == n_given


def scene(seed, n):
    """A plausible scene: n points ~1 m in front of the camera and their projections."""
    rng = np.random.default_rng(seed)
    p3 = rng.uniform(-0.5, 0.5, (n, 3)) + [0, 0, 1.5]
    uv = p3[:, :2] / p3[:, 2:] * 500.0 + [320, 240]
    return p3, uv


# ---------------------------------------------------------------------------- solve_pnp
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p3=arrays(0, 9, 3, st.one_of(st.floats(-1e3, 1e3), wild)),
       p2=arrays(0, 9, 2, st.one_of(st.floats(-1e4, 1e4), wild)),
       K=st.one_of(st.just(K_GOOD.ravel().tolist()), st.lists(wild, min_size=9, max_size=9)),
       robust=st.booleans())
def test_solve_pnp_with_random_numbers(p3, p2, K, robust):
    n = min(len(p3), len(p2))
    try:
        est = solve_pnp(np.array(p3[:n]).reshape(-1, 3), np.array(p2[:n]).reshape(-1, 2),
                        np.array(K).reshape(3, 3), robust=robust)
    except InputError:
        return
    check_estimate(est, n)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10 ** 6), n=st.one_of(st.integers(0, 12), st.integers(5, 12)),
       noise=st.floats(0.0, 300.0), nan_rows=st.lists(st.integers(0, 11), max_size=8),
       dist=st.one_of(st.none(), st.lists(st.floats(-0.5, 0.5), min_size=5, max_size=5)))
def test_solve_pnp_with_noisy_and_missing_points(seed, n, noise, nan_rows, dist):
    """Near-real input: any noise level, missing rows, distortion: a value, never an exception."""
    p3, uv = scene(seed, n)
    uv = uv + np.random.default_rng(seed + 1).normal(0, noise + 1e-9, uv.shape)
    for r in nan_rows:
        if r < n:
            uv[r] = np.nan
    est = solve_pnp(p3, uv, K_GOOD, dist=dist)
    check_estimate(est, n)


@pytest.mark.parametrize("args", [
    ("not an array", np.zeros((4, 2)), K_GOOD),
    (np.zeros((4, 3)), [[1, 2], [3]], K_GOOD),                   # ragged
    (np.zeros((4, 2)), np.zeros((4, 2)), K_GOOD),                # wrong width
    (np.zeros((4, 3)), np.zeros((5, 2)), K_GOOD),                # row counts differ
    (np.zeros((4, 3)), np.zeros((4, 2)), np.zeros((2, 2))),      # K shape
    (np.zeros((4, 3)), np.zeros((4, 2)), None),
    (np.zeros((4, 3)), np.zeros((4, 2)), "K"),
    (np.full((4, 3), np.nan), np.zeros((4, 2)), K_GOOD),
    (np.zeros((4, 3)), np.full((4, 2), np.inf), K_GOOD),
    (np.zeros((4, 3), dtype=object), np.zeros((4, 2)), K_GOOD),
])
def test_solve_pnp_with_malformed_arguments(args):
    try:
        est = solve_pnp(*args)
    except InputError:
        return
    check_estimate(est)


@pytest.mark.parametrize("dist", [[1, 2, 3], [np.nan] * 5, "abc", [[1, 2], [3, 4], [5, 6]]])
def test_solve_pnp_with_malformed_distortion(dist):
    p3, uv = scene(0, 7)
    try:
        est = solve_pnp(p3, uv, K_GOOD, dist=dist)
    except InputError:
        return
    check_estimate(est)


# --------------------------------------------------------------------------- multi-frame
frame = st.tuples(st.integers(0, 10 ** 6), st.integers(0, 9), st.floats(0.0, 200.0),
                  st.sampled_from(["good", "garbage", "nan3d", "rows", "empty", "inf2d"]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames_=st.lists(frame, min_size=1, max_size=12),
       options=st.fixed_dictionaries({}, optional={
           "min_frames": st.integers(1, 4), "converge_window": st.integers(1, 4),
           "max_frames": st.integers(1, 6), "robust": st.booleans(),
           "loss": st.sampled_from(["linear", "huber", "soft_l1", "cauchy", "arctan"])}))
def test_multiframe_with_random_and_malformed_frames(frames_, options):
    """Any sequence of good, noisy, garbage and malformed frames: each add_frame returns an
    estimate or raises InputError, and the solver keeps working after an InputError."""
    solver = MultiFrameSolver(K_GOOD, **options)
    for seed, n, noise, kind in frames_:
        p3, uv = scene(seed, n)
        uv = uv + np.random.default_rng(seed).normal(0, noise + 1e-9, uv.shape)
        if kind == "garbage":
            uv = np.random.default_rng(seed).uniform(-1e4, 1e4, uv.shape)
        elif kind == "nan3d" and n:
            p3[0] = np.nan
        elif kind == "rows":
            uv = uv[:-1] if n else np.zeros((1, 2))
        elif kind == "empty":
            p3, uv = np.zeros((0, 3)), np.zeros((0, 2))
        elif kind == "inf2d" and n:
            uv[0] = np.inf
        try:
            est = solver.add_frame(p3, uv)
        except InputError:
            continue
        check_estimate(est)
    est = solver.add_frame(*scene(1, 7))      # still usable
    check_estimate(est, 7)


@settings(max_examples=100, deadline=None)
@given(K=st.lists(wild, min_size=9, max_size=9),
       dist=st.one_of(st.none(), st.lists(wild, max_size=9)),
       options=st.dictionaries(st.sampled_from(["max_frames", "min_frames", "converge_window",
                                                "loss", "nonsense", "ransac_iterations",
                                                "max_standard_error_translation_m",
                                                "max_standard_error_rotation_deg"]),
                               st.one_of(st.integers(-3, 5), st.text(max_size=3)), max_size=3))
def test_multiframe_construction_with_bad_arguments(K, dist, options):
    """Found a defect: a string for an integer option raised ValueError (a start-up crash of
    the node with a traceback instead of a ConfigError)."""
    try:
        MultiFrameSolver(np.array(K).reshape(3, 3), dist, **options)
    except InputError:
        return


@settings(max_examples=100, deadline=None)
@given(options=st.dictionaries(
    st.sampled_from(["min_points", "ransac_reprojection_px", "ransac_iterations",
                     "ransac_confidence", "min_image_extent_px", "collinear_tolerance",
                     "sigma_floor_px", "inlier_px", "min_inliers"]),
    st.one_of(st.integers(-5, 50), wild, st.text(max_size=3), st.none(),
              st.lists(st.integers(), max_size=2)), max_size=3))
# Found by CI: squaring a huge floor overflowed inside pose_covariance.
@example(options={"ransac_reprojection_px": 1, "sigma_floor_px": 1.3407807929942597e+154})
def test_solve_pnp_with_random_option_values(options):
    p3, uv = scene(2, 7)
    try:
        est = solve_pnp(p3, uv, K_GOOD, **options)
    except InputError:
        return
    check_estimate(est, 7)


# ------------------------------------------------------------------------------ Calibrator
class RandomDetector:
    """Detections the network could produce in a bad moment: NaN, far outside, all in one spot."""

    def __init__(self, names):
        self.names = list(names)
        self.uv = None

    def detect(self, rgb, return_belief=False):
        uv = np.asarray(self.uv, float)
        det = np.all(np.isfinite(uv), axis=1)
        return Detections(self.names, uv, det.astype(float), det,
                          (rgb.shape[1], rgb.shape[0]), None)


@pytest.fixture(scope="module")
def robot():
    from dream_ros.robot import RobotModel
    return RobotModel.load("panda")


@settings(max_examples=120, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(uv=arrays(7, 7, 2, pixels), joints=st.lists(st.one_of(tame, wild), min_size=7, max_size=7),
       mode=st.sampled_from(["continuous", "static"]),
       K=st.one_of(st.just(K_GOOD.tolist()), st.lists(wild, min_size=9, max_size=9)))
def test_calibrator_with_random_detections_joints_and_intrinsics(robot, uv, joints, mode, K):
    det = RandomDetector(robot.keypoint_names)
    cal = Calibrator(robot, det, mode=mode)
    det.uv = uv
    q = dict(zip(robot.joint_names, joints))
    for _ in range(2):
        try:
            _, est = cal.process(np.zeros((480, 640, 3), np.uint8), q, np.array(K).reshape(3, 3))
        except InputError:
            return
        check_estimate(est)
        if est.ok:       # gates passed: the transform is plausible
            assert 0.2 <= np.linalg.norm(est.camera_T_base[:3, 3]) <= 6.0


@pytest.mark.parametrize("rgb", [None, np.zeros((4, 4)), np.zeros((4, 4, 3), np.float32),
                                 np.zeros((0, 0, 3), np.uint8), "image"])
def test_calibrator_refuses_malformed_images(robot, rgb):
    cal = Calibrator(robot, RandomDetector(robot.keypoint_names))
    with pytest.raises(InputError):
        cal.process(rgb, dict(zip(robot.joint_names, [0.0] * 7)), K_GOOD)


def test_calibrator_options_are_config_errors(robot):
    with pytest.raises(ConfigError):
        Calibrator(robot, None, mode="sometimes")
    with pytest.raises(ConfigError):
        Calibrator(robot, None, pnp_options={"nonsense": 1})
    with pytest.raises(ConfigError):
        Calibrator(robot, None, mode="static", solver_options={"max_frames": 0})
    # bad values fail at start-up too, not per frame (dry run)
    with pytest.raises(ConfigError, match="ransac_iterations"):
        Calibrator(robot, None, pnp_options={"ransac_iterations": "many"})
    with pytest.raises(ConfigError, match="min_inliers"):
        Calibrator(robot, None, pnp_options={"min_inliers": 2})
    with pytest.raises(ConfigError, match="max_frames"):
        Calibrator(robot, None, mode="static", solver_options={"max_frames": "lots"})
    with pytest.raises(ConfigError, match="frame_gate_px"):
        Calibrator(robot, None, mode="static", solver_options={"frame_gate_px": float("nan")})
