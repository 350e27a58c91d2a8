"""Synthetic data: exact labels, NDDS output read back, determinism, shards, resume."""
from __future__ import annotations

import json

import cv2

import mujoco
import numpy as np
import pytest

from dream_ros.data.ndds import NddsDataset
from dream_ros.frames import invert
from dream_ros.robot import RobotModel
from dream_ros.synth.generate import SynthOptions, run_synth
from dream_ros.synth.randomize import look_at
from dream_ros.synth.render import RobotRenderer, intrinsics_from_fov

W, H = 320, 240


@pytest.fixture(scope="module")
def marker_renderer():
    r = RobotRenderer("panda", W, H, markers=True)
    yield r
    r.close()


@pytest.mark.parametrize("case", range(3))
def test_marker_centroids_match_projected_location(marker_renderer, case):
    """Small spheres rendered at the keypoint frames land within 0.5 px of the labels, also with
    fx != fy and an off-centre principal point."""
    r = marker_renderer
    rng = np.random.default_rng(case)
    lo, hi = r.scene.joint_limits()
    joints = dict(zip(r.scene.joint_names, rng.uniform(lo, hi) * 0.6))
    K = intrinsics_from_fov(W, H, 50)
    if case > 0:
        K[0, 0] *= 1.1
        K[0, 2] += 17.3 * (-1) ** case
        K[1, 2] -= 9.6 * (-1) ** case
    az = 0.7 + 2.0 * case
    cam = np.array([1.5 * np.cos(az), 1.5 * np.sin(az), 0.9])
    camera_T_base = invert(look_at(cam, np.array([0.0, 0.0, 0.45]), roll_rad=0.2 * case))
    _, labels = r.render(joints, camera_T_base, K, return_labels=True)
    geom = r.render_markers(joints, camera_T_base, K)
    checked = 0
    for k, name in enumerate(labels.names):
        gid = mujoco.mj_name2id(r.scene.model, mujoco.mjtObj.mjOBJ_GEOM, "marker:" + name)
        vs, us = np.nonzero(geom == gid)
        expected_area = np.pi * (0.012 * K[1, 1] / labels.xyz[k, 2]) ** 2
        if len(us) < max(10, 0.8 * expected_area) or not labels.in_frame[k]:
            continue    # marker overlapped by another marker or cut by the border: centroid biased
        err = np.hypot(us.mean() - labels.uv[k, 0], vs.mean() - labels.uv[k, 1])
        assert err < 0.5, (name, err)
        checked += 1
    assert checked >= 4


def test_keypoints_match_urdf_forward_kinematics(marker_renderer):
    r = marker_renderer
    model = RobotModel.load("panda")
    rng = np.random.default_rng(5)
    lo, hi = r.scene.joint_limits()
    for _ in range(5):
        joints = dict(zip(r.scene.joint_names, rng.uniform(lo, hi)))
        r.scene.set_joints(joints)
        world = r.scene.keypoints_world()
        base = invert(r.scene.world_T_base())
        mj_base = world @ base[:3, :3].T + base[:3, 3]
        fk = model.keypoints_3d({n: joints[n] for n in model.joint_names})
        np.testing.assert_allclose(mj_base, fk, atol=1e-9)


def _opts(out, **kw):
    base = dict(robot="panda", out=str(out), count=6, seed=7, width=96, height=72, distractors=3)
    base.update(kw)
    return SynthOptions(**base)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    run_synth(_opts(out), workers=1, progress=False)
    return out


def test_tiny_dataset_reads_back(tiny):
    ds = NddsDataset(tiny, robot_name="panda")
    assert len(ds) == 6 and ds.image_size == (96, 72)
    assert (tiny / "dataset.yaml").exists()
    model = RobotModel.load("panda")
    for i in range(len(ds)):
        f = ds[i]
        assert f.keypoint_names == model.keypoint_names
        assert ds.load_image(i).shape == (72, 96, 3)
        # projected_location is the pinhole projection of location with the frame's K
        uv = f.location[:, :2] / f.location[:, 2:] * np.diag(f.K)[:2] + f.K[:2, 2]
        np.testing.assert_allclose(f.projected, uv, atol=1e-6)
        # the 3D labels are the URDF forward kinematics at the recorded joints, seen by the camera
        fk = model.keypoints_3d({n: f.joints[n] for n in model.joint_names})
        cam = fk @ f.camera_T_base[:3, :3].T + f.camera_T_base[:3, 3]
        np.testing.assert_allclose(f.location, cam, atol=1e-6)
        inside = ((f.projected[:, 0] >= -0.5) & (f.projected[:, 0] < 95.5) & (f.projected[:, 1] >= -0.5)
                  & (f.projected[:, 1] < 71.5) & (f.location[:, 2] > 0))
        assert f.in_frame.tolist() == inside.tolist()
        assert not np.any(f.occluded & ~f.in_frame)


def test_sampled_poses_are_collision_free(tiny):
    from dream_ros.synth.scene import RobotScene
    scene = RobotScene("panda", max_width=64, max_height=64)
    for f in NddsDataset(tiny):
        scene.set_joints(f.joints)
        assert not scene.in_collision()
    # and the check can fail: the hand through the floor, the hand into the shoulder
    scene.set_joints({"panda_joint2": 1.7, "panda_joint4": -0.5, "panda_joint6": 0.5})
    assert scene.in_collision()
    scene.set_joints({"panda_joint1": -0.29, "panda_joint2": 1.04, "panda_joint3": -1.56,
                      "panda_joint4": -2.92, "panda_joint5": -0.55, "panda_joint6": 0.73,
                      "panda_joint7": -2.37})
    assert scene.in_collision()


def test_deterministic_and_shard_independent(tiny, tmp_path):
    run_synth(_opts(tmp_path, shard_index=1, shard_count=2), workers=1, progress=False)
    names = sorted(p.name for p in tmp_path.glob("0*.json"))
    assert names == ["000001.json", "000003.json", "000005.json"]
    for n in names:
        a = json.loads((tiny / n).read_text())
        b = json.loads((tmp_path / n).read_text())
        a["synth"].pop("robot_pixels"), b["synth"].pop("robot_pixels")
        assert a == b
        ia = NddsDataset(tiny).load_image(int(n[:6])).astype(int)
        ib = NddsDataset(tmp_path).load_image(int(n[:6]) // 2).astype(int)
        assert np.abs(ia - ib).mean() < 1.0


def test_resume_skips_existing_frames(tmp_path):
    card = run_synth(_opts(tmp_path, count=3), workers=1, progress=False)
    assert card["frames_written_this_run"] == 3
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("00000[02]*")}
    (tmp_path / "000001.json").unlink()
    card = run_synth(_opts(tmp_path, count=3), workers=1, progress=False)
    assert card["frames_written_this_run"] == 1 and card["frames_skipped_existing"] == 2
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("00000[02]*")}
    assert len(NddsDataset(tmp_path)) == 3


def test_robot_renderer_backgrounds_and_materials(marker_renderer):
    r = marker_renderer
    K = intrinsics_from_fov(W, H, 60)
    cTb = invert(look_at(np.array([1.6, 0.4, 0.8]), np.array([0.0, 0.0, 0.4])))
    rgb, lab = r.render({}, cTb, K, background=(0, 0, 255), return_labels=True)
    assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
    assert lab.robot_pixels > 500
    bg = lab.mask == 0
    far_bg = cv2.erode(bg.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0   # edges are feathered
    assert np.all(rgb[far_bg] == [0, 0, 255])
    grey = r.render({}, cTb, K, background=(0, 0, 255), true_materials=False)
    assert not np.array_equal(grey[~bg], rgb[~bg])


def test_masks_match_labels(tmp_path):
    run_synth(_opts(tmp_path, count=2, masks=True), workers=1, progress=False)
    ds = NddsDataset(tmp_path)
    for i in range(len(ds)):
        f = ds[i]
        mask = cv2.imread(str(f.mask_path), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (72, 96) and set(np.unique(mask)) <= {0, 128, 255}
        assert np.count_nonzero(mask == 255) == f.raw["synth"]["robot_pixels"]
        for k in np.flatnonzero(f.in_frame):
            u, v = np.clip(np.round(f.projected[k]).astype(int), 0, [95, 71])
            assert (mask[v, u] != 255) == f.occluded[k]


def test_camera_overrides_replace_the_robot_config_ranges():
    from dream_ros.synth.generate import SynthOptions, randomization
    base = randomization({"camera": {"radius_m": [0.45, 2.0]}}, SynthOptions())
    assert base["camera"]["radius_m"] == [0.45, 2.0]
    r = randomization({"camera": {"radius_m": [0.45, 2.0]}},
                      SynthOptions(camera_radius=(0.6, 1.4), closeup_prob=0.3))
    assert r["camera"]["radius_m"] == [0.6, 1.4] and r["camera"]["closeup_prob"] == 0.3
    assert r["fov_deg"] == base["fov_deg"]


def test_cli_refuses_bad_camera_radius(tmp_path):
    import argparse
    import pytest
    from dream_ros.errors import InputError
    from dream_ros.synth import cli
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    with pytest.raises(InputError, match="camera-radius"):
        cli.run(p.parse_args(["--out", str(tmp_path), "--camera-radius", "1.4", "0.6"]))


def test_table_scenes_stand_the_robot_on_a_plate_on_a_table(tmp_path):
    from dream_ros.synth.randomize import Randomizer
    from dream_ros.synth.scene import RobotScene
    scene = RobotScene("panda")
    rnd = Randomizer(scene, W, H)
    rnd.ranges["table_prob"] = 1.0
    rng = np.random.default_rng(3)
    plates = 0
    for _ in range(20):
        assert rnd.sample(rng).table
        (table, plate), base = scene.support_geoms, scene.world_T_base()[:3, 3]
        top = lambda g: scene.data.geom_xpos[g][2] + scene.model.geom_size[g][2]   # noqa: E731
        on_table = scene.data.geom_xpos[plate][2] > -50
        plates += on_table
        # the base stands on the plate (or the table), the plate on the table
        assert np.isclose(top(plate if on_table else table), 0.0, atol=1e-9)
        if on_table:
            assert np.isclose(top(table), scene.data.geom_xpos[plate][2]
                              - scene.model.geom_size[plate][2], atol=1e-9)
        # ... at least 0.15 m inside the table's edges
        R = scene.data.geom_xmat[table].reshape(3, 3)
        local = R.T @ (base - scene.data.geom_xpos[table])
        assert np.all(np.abs(local[:2]) <= scene.model.geom_size[table][:2] - 0.15 + 1e-9)
    assert 0 < plates < 20
    # the same frames without tables: same robot, camera and labels; the table only adds
    # non-robot foreground (mask 128), and frames say which kind they are
    run_synth(_opts(tmp_path / "flat", count=3, masks=True), workers=1, progress=False)
    run_synth(_opts(tmp_path / "table", count=3, masks=True, table_prob=1.0), workers=1,
              progress=False)
    flat, tab = NddsDataset(tmp_path / "flat"), NddsDataset(tmp_path / "table")
    support_pixels = 0
    for i in range(3):
        a, b = flat[i], tab[i]
        assert not a.raw["synth"]["table"] and b.raw["synth"]["table"]
        np.testing.assert_allclose(a.projected, b.projected)
        ma, mb = (cv2.imread(str(f.mask_path), cv2.IMREAD_UNCHANGED) for f in (a, b))
        support_pixels += np.count_nonzero(mb == 128) - np.count_nonzero(ma == 128)
        for k in np.flatnonzero(b.in_frame):     # a keypoint hidden by the table is occluded
            u, v = np.clip(np.round(b.projected[k]).astype(int), 0, [95, 71])
            assert (mb[v, u] != 255) == b.occluded[k]
    assert support_pixels > 0


def test_cli_refuses_a_bad_table_share(tmp_path):
    import argparse
    from dream_ros.errors import InputError
    from dream_ros.synth import cli
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    with pytest.raises(InputError, match="table-prob"):
        cli.run(p.parse_args(["--out", str(tmp_path), "--table-prob", "1.5"]))
