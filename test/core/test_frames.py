"""Frame conventions (dream_ros.frames): optical vs camera_link, a_T_b, xyzw quaternions, and that
the PnP result follows them."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from geometry_scenes import K, look_at, project, random_view
from scipy.spatial.transform import Rotation

from dream_ros import frames
from dream_ros.pnp import solve_pnp


def random_transform(rng):
    return frames.make_transform(Rotation.random(random_state=int(rng.integers(1 << 30))).as_matrix(),
                                 rng.normal(size=3))


def test_optical_to_camera_link_axes():
    R = frames.LINK_R_OPTICAL
    assert np.allclose(R @ R.T, np.eye(3)) and np.linalg.det(R) == pytest.approx(1.0)
    assert np.allclose(R @ [0, 0, 1], [1, 0, 0])     # optical z (forward) = link x (forward)
    assert np.allclose(R @ [1, 0, 0], [0, -1, 0])    # optical x (right)   = link -y (y is left)
    assert np.allclose(R @ [0, 1, 0], [0, 0, -1])    # optical y (down)    = link -z (z is up)
    assert np.allclose(frames.LINK_T_OPTICAL[:3, :3], R)
    assert np.allclose(frames.LINK_T_OPTICAL[:3, 3], 0)


def test_invert_and_composition():
    rng = np.random.default_rng(40)
    for _ in range(20):
        a_T_b, b_T_c = random_transform(rng), random_transform(rng)
        assert np.allclose(frames.invert(a_T_b) @ a_T_b, np.eye(4))
        assert np.allclose(frames.invert(a_T_b), np.linalg.inv(a_T_b))
        p_c = rng.normal(size=3)
        a_T_c = a_T_b @ b_T_c                                 # a_T_b maps b points into a
        assert np.allclose((a_T_c @ np.append(p_c, 1))[:3],
                           (a_T_b @ np.append((b_T_c @ np.append(p_c, 1))[:3], 1))[:3])


def test_rvec_tvec_round_trip_matches_opencv():
    rng = np.random.default_rng(41)
    T = random_transform(rng)
    rvec, tvec = frames.to_rvec_tvec(T)
    assert np.allclose(cv2.Rodrigues(rvec)[0], T[:3, :3])
    assert np.allclose(frames.from_rvec_tvec(rvec, tvec), T)
    assert np.allclose(frames.from_rvec_tvec(rvec.reshape(3, 1), tvec.reshape(3, 1)), T)


def test_quaternions_are_xyzw_with_non_negative_w():
    T = frames.make_transform(Rotation.from_euler("z", 90, degrees=True).as_matrix(), [1, 2, 3])
    s = np.sqrt(0.5)
    assert np.allclose(frames.quaternion_xyzw(T), [0, 0, s, s])
    rng = np.random.default_rng(42)
    for _ in range(50):
        T = random_transform(rng)
        q = frames.quaternion_xyzw(T)
        assert q[3] >= 0 and np.linalg.norm(q) == pytest.approx(1.0)
        assert np.allclose(frames.from_translation_quaternion(T[:3, 3], q), T)
        assert np.allclose(frames.from_translation_quaternion(T[:3, 3], -3.0 * q), T)
    with pytest.raises(ValueError, match="quaternion"):
        frames.from_translation_quaternion([0, 0, 0], [0, 0, 0, 0])
    with pytest.raises(ValueError, match="quaternion"):
        frames.from_translation_quaternion([0, 0, 0], [np.nan, 0, 0, 1])


def test_pose_error_measures_the_camera_position():
    cam = look_at([1.5, 0.0, 1.0], [0, 0, 0.4])
    moved = look_at([1.5, 0.03, 1.04], [0, 0, 0.4])
    dt, dr = frames.pose_error(moved, cam)
    assert dt == pytest.approx(0.05)
    assert 0 < dr < 5
    turned = cam.copy()
    turned[:3, :3] = Rotation.from_euler("y", 10, degrees=True).as_matrix() @ cam[:3, :3]
    turned[:3, 3] = Rotation.from_euler("y", 10, degrees=True).as_matrix() @ cam[:3, 3]
    dt, dr = frames.pose_error(turned, cam)                # rotation about the camera centre
    assert dt == pytest.approx(0.0, abs=1e-12) and dr == pytest.approx(10.0)
    assert frames.rotation_angle_deg(cam[:3, :3], cam[:3, :3]) == pytest.approx(0.0, abs=1e-6)


def test_camera_link_pose_from_pnp_result():
    eye = np.array([1.2, -0.4, 0.9])
    camera_T_base = look_at(eye, [0, 0, 0.4])
    base_T_link = frames.base_T_camera_link(camera_T_base)
    assert np.allclose(base_T_link[:3, 3], eye)          # TF child = camera, at the camera centre
    forward = np.array([0, 0, 0.4]) - eye
    forward /= np.linalg.norm(forward)
    assert np.allclose(base_T_link[:3, 0], forward)      # camera_link x looks at the target
    assert base_T_link[2, 2] > 0                         # camera_link z is up-ish (no roll)
    assert np.allclose(frames.invert(camera_T_base)[:3, 2], forward)   # optical z forward


def test_pnp_result_follows_the_conventions():
    """solve_pnp returns camera_T_base: base points -> OpenCV optical frame, projected by K."""
    rng = np.random.default_rng(43)
    p3, p2, T = random_view(rng)
    est = solve_pnp(p3, p2, K)
    cam_pts = (est.camera_T_base @ np.c_[p3, np.ones(len(p3))].T).T[:, :3]
    assert np.all(cam_pts[:, 2] > 0)                     # in front: optical z forward
    uv = cam_pts[:, :2] / cam_pts[:, 2:] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    assert np.allclose(uv, p2, atol=1e-6)
    assert np.allclose(project(est.camera_T_base, p3), p2, atol=1e-6)
