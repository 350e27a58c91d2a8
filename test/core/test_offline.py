"""Offline calibration (``python -m dream_ros calibrate``) on tiny inputs written here: an NDDS folder,
an EasyHeC-style image folder and a ROS bag, all showing one static camera.

The pipeline is driven by an oracle detector (the true projections plus noise, looked up from a
frame id stamped into the image's first pixel) so the numbers can be asserted; one test runs the
real CLI with a real (untrained) model file to check the wiring and the files it writes.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dream_ros.frames import invert, pose_error
from dream_ros.robot import RobotModel
from dream_ros.ros.sim_camera import intrinsics_from_fov, look_at_camera_T_base
from dream_ros.types import Detections

from geometry_scenes import joints_near_middle

W, H = 320, 240
N_FRAMES = 8


@pytest.fixture(scope="module")
def robot():
    return RobotModel.load("panda")


@pytest.fixture(scope="module")
def scene(robot):
    """A static camera, N joint configurations, their true projections and one tag per frame."""
    rng = np.random.default_rng(3)
    q = joints_near_middle(robot, rng, N_FRAMES, 0.3)
    T = look_at_camera_T_base([1.3, 0.6, 0.8], [0.1, 0.0, 0.45])
    K = intrinsics_from_fov(W, H, 55.0)
    uv = []
    for qi in q:
        p = robot.keypoints_3d(qi) @ T[:3, :3].T + T[:3, 3]
        uv.append(p[:, :2] / p[:, 2:] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]])
    return {"q": q, "T": T, "K": K, "uv": np.array(uv), "rng": rng}


def tagged_image(i: int) -> np.ndarray:
    img = np.full((H, W, 3), 90, np.uint8)
    img[0, 0] = (i, 7, 7)
    return img


class OracleDetector:
    """True projections + 0.5 px noise; the frame is identified by the image's first pixel.
    ``missing``: {frame index: keypoint indices to report as not found}."""

    def __init__(self, robot, uv, noise_px=0.5, missing=None, seed=0):
        self.names = list(robot.keypoint_names)
        self.uv = uv
        self.noise = noise_px
        self.missing = missing or {}
        self.rng = np.random.default_rng(seed)

    def detect(self, rgb, return_belief=False):
        i = int(rgb[0, 0, 0])
        uv = self.uv[i] + self.rng.normal(0, self.noise, self.uv[i].shape)
        det = np.ones(len(self.names), bool)
        det[list(self.missing.get(i, []))] = False
        uv[~det] = np.nan
        return Detections(names=self.names, uv=uv, scores=np.where(det, 1.0, 0.0), detected=det,
                          image_size=(W, H))


def write_image_folder(root: Path, scene, robot, K_as_four=False, masks=False):
    import cv2
    (root / "color").mkdir(parents=True)
    (root / "qpos").mkdir()
    if masks:   # the robot's true silhouette, as EasyHeC's hand-drawn masks
        from dream_ros.synth.render import RobotRenderer
        (root / "mask").mkdir()
        renderer = RobotRenderer(robot.config, W, H)
    for i, q in enumerate(scene["q"]):
        cv2.imwrite(str(root / "color" / ("%06d.png" % i)), tagged_image(i)[:, :, ::-1])
        np.savetxt(root / "qpos" / ("%06d.txt" % i), np.concatenate([q, [0.0, 0.0]]))
        if masks:
            _, labels = renderer.render(dict(zip(robot.joint_names, q)), scene["T"], scene["K"],
                                        return_labels=True)
            cv2.imwrite(str(root / "mask" / ("%06d.png" % i)), 255 * (labels.mask == 1).astype(np.uint8))
    if masks:
        renderer.close()
    K = scene["K"]
    np.savetxt(root / "K.txt", [K[0, 0], K[1, 1], K[0, 2], K[1, 2]] if K_as_four else K)
    return root


def write_ndds(root: Path, scene, robot):
    from dream_ros.data.ndds import frame_record, write_camera_settings, write_frame
    root.mkdir(parents=True)
    T, K = scene["T"], scene["K"]
    write_camera_settings(root, K, W, H)
    for i, q in enumerate(scene["q"]):
        xyz = robot.keypoints_3d(q) @ T[:3, :3].T + T[:3, 3]
        rec = frame_record("panda", robot.keypoint_names, xyz, scene["uv"][i], T,
                           dict(zip(robot.joint_names, q)), K=K)
        write_frame(root, "%06d" % i, tagged_image(i), rec, ext="png")
    return root


def write_bag(path: Path, scene, robot, joint_offset_s=0.01, drop_joints_for=()):
    """Images at 1 Hz; joint states 10 ms after each image (nearest-stamp pairing), split over two
    messages for realism (arm / fingers); camera_info once at the start."""
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore
    ts = get_typestore(Stores.ROS1_NOETIC)
    T_ = ts.types
    Time, Header = T_["builtin_interfaces/msg/Time"], T_["std_msgs/msg/Header"]
    Image, Info, JS = T_["sensor_msgs/msg/Image"], T_["sensor_msgs/msg/CameraInfo"], T_["sensor_msgs/msg/JointState"]
    RoI = T_["sensor_msgs/msg/RegionOfInterest"]

    def header(t, frame=""):
        return Header(seq=0, stamp=Time(sec=int(t), nanosec=int(round((t % 1) * 1e9))), frame_id=frame)

    with Writer(path) as w:
        c_info = w.add_connection("/cam/camera_info", Info.__msgtype__, typestore=ts)
        c_img = w.add_connection("/cam/image_raw", Image.__msgtype__, typestore=ts)
        c_js = w.add_connection("/joint_states", JS.__msgtype__, typestore=ts)
        TS, Tr = T_["geometry_msgs/msg/TransformStamped"], T_["geometry_msgs/msg/Transform"]
        V3, Q = T_["geometry_msgs/msg/Vector3"], T_["geometry_msgs/msg/Quaternion"]
        c_truth = w.add_connection("/sim/truth", TS.__msgtype__, typestore=ts)
        from dream_ros.frames import quaternion_xyzw
        B = invert(scene["T"])
        qx, qy, qz, qw = quaternion_xyzw(B)
        truth = TS(header=header(100.0, "panda_link0"), child_frame_id="cam_optical",
                   transform=Tr(translation=V3(x=B[0, 3], y=B[1, 3], z=B[2, 3]),
                                rotation=Q(x=qx, y=qy, z=qz, w=qw)))
        w.write(c_truth, int(100e9), ts.serialize_ros1(truth, TS.__msgtype__))
        K = scene["K"]
        info = Info(header=header(100.0, "cam_optical"), height=H, width=W, distortion_model="plumb_bob",
                    D=np.zeros(5), K=K.reshape(-1), R=np.eye(3).reshape(-1), P=np.zeros(12),
                    binning_x=0, binning_y=0,
                    roi=RoI(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
        w.write(c_info, int(100e9), ts.serialize_ros1(info, Info.__msgtype__))
        for i, q in enumerate(scene["q"]):
            t = 100.0 + i
            bgr = tagged_image(i)[:, :, ::-1]
            img = Image(header=header(t, "cam_optical"), height=H, width=W, encoding="bgr8",
                        is_bigendian=0, step=W * 3, data=np.ascontiguousarray(bgr).reshape(-1))
            w.write(c_img, int(t * 1e9), ts.serialize_ros1(img, Image.__msgtype__))
            if i in drop_joints_for:
                continue
            tj = t + joint_offset_s
            arm = JS(header=header(tj), name=list(robot.joint_names), position=np.asarray(q, float),
                     velocity=np.zeros(0), effort=np.zeros(0))
            fingers = JS(header=header(tj), name=["panda_finger_joint1"], position=np.zeros(1),
                         velocity=np.zeros(0), effort=np.zeros(0))
            w.write(c_js, int(tj * 1e9), ts.serialize_ros1(arm, JS.__msgtype__))
            w.write(c_js, int(tj * 1e9), ts.serialize_ros1(fingers, JS.__msgtype__))
    return path


def _records(out: Path):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _check_outputs(out: Path, scene, summary, expect_ok):
    from dream_ros.calibration import load_calibration
    recs = _records(out)
    assert len(recs) == N_FRAMES
    ok = [r for r in recs if r["status"] == "ok"]
    assert len(ok) == expect_ok
    for r in ok:
        assert set(r) >= {"frame", "keypoints", "camera_T_base", "reprojection_error_px", "status"}
        T = np.array(r["camera_T_base"])
        dt, dr = pose_error(T, scene["T"])
        assert dt < 0.15 and dr < 6.0, (r["frame"], dt, dr)   # one view: rotation/depth coupling
        assert 0 < r["reprojection_error_px"] < 3
        assert all(v is None or len(v) == 2 for v in r["keypoints"].values())
    calib = load_calibration(out / "calibration.yaml")
    dt, dr = pose_error(calib.camera_T_base, scene["T"])
    assert dt < 0.01 and dr < 0.5          # many frames: better than any single one
    assert calib.frames_used == expect_ok
    assert summary["multiframe"]["frames_used"] == expect_ok
    assert summary["multiframe"]["frames"] == [r["frame"] for r in ok]   # by name, in order
    assert len(list((out / "overlays").glob("*.png"))) >= 1
    return recs


def test_image_folder(tmp_path, scene, robot):
    from dream_ros.data.sources import ImageFolderSource
    from dream_ros.offline import calibrate
    folder = write_image_folder(tmp_path / "imgs", scene, robot, K_as_four=True, masks=True)
    src = ImageFolderSource(folder, robot.joint_names)
    assert np.allclose(src.K, scene["K"])
    det = OracleDetector(robot, scene["uv"], missing={2: range(5)})   # frame 2: only 2 keypoints
    summary = calibrate(src, robot, det, tmp_path / "out", overlays=3, progress=False, quiet=True)
    recs = _check_outputs(tmp_path / "out", scene, summary, expect_ok=N_FRAMES - 1)
    bad = recs[2]
    assert bad["camera_T_base"] is None and bad["status"].startswith("too_few_keypoints")
    assert sum(v is not None for v in bad["keypoints"].values()) == 2
    # Masks score the poses without ground truth: the multi-frame pose overlaps them closely,
    # single frames less (and never better than perfect).
    m = summary["mask_iou"]
    assert m["frames_with_mask"] == N_FRAMES and m["multiframe_median"] > 0.9
    assert all(0.3 < r["mask_iou"] <= 1.0 for r in recs if r["status"] == "ok")
    assert m["single_frame_median"] <= m["multiframe_median"] + 0.02


def test_mask_reference_scores_the_run(tmp_path, scene, robot, monkeypatch, capsys):
    """--mask-reference: the pose fitted to the (true) masks is the camera; the oracle's
    detections sit within its noise of the keypoints projected there."""
    from dream_ros.data.sources import ImageFolderSource
    from dream_ros.evaluation import mask_reference
    from dream_ros.offline import calibrate
    monkeypatch.setattr(mask_reference, "COARSE_TO_FINE", ((0.004, 0.006, 40),))  # starts are close
    folder = write_image_folder(tmp_path / "imgs", scene, robot, masks=True)
    det = OracleDetector(robot, scene["uv"], missing={5: [1]})
    summary = calibrate(ImageFolderSource(folder, robot.joint_names), robot, det, tmp_path / "out",
                        overlays=0, progress=False, mask_reference=0.8)
    ref = summary["mask_reference"]
    assert len(ref["consistent_frames"]) == N_FRAMES and ref["mean_iou_consistent"] > 0.9
    dt, dr = pose_error(np.array(ref["camera_T_base"]), scene["T"])
    assert dt < 0.02 and dr < 1.0
    assert ref["multiframe_error"][0] < 0.02 and ref["single_frame_error_median"][0] < 0.1
    assert ref["keypoints_detected"] == [N_FRAMES * 7 - 1, N_FRAMES * 7]
    assert ref["keypoint_error_median_px"] < 3.0
    assert set(ref["keypoint_error_median_px_per_keypoint"]) == set(robot.keypoint_names)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["mask_reference"] == \
        json.loads(json.dumps(ref))
    assert "mask reference pose (fitted to %d of %d frames" % (N_FRAMES, N_FRAMES) \
        in capsys.readouterr().out
    import cv2
    sheet = cv2.imread(ref["contact_sheet"])
    assert sheet is not None and sheet.shape[0] == 2 * H and sheet.shape[1] == 5 * W


def test_ndds_folder_scores_against_truth(tmp_path, scene, robot):
    from dream_ros.data.sources import NddsSource
    from dream_ros.offline import calibrate
    folder = write_ndds(tmp_path / "ndds", scene, robot)
    src = NddsSource(folder, robot)
    frames = list(src)
    assert len(frames) == N_FRAMES and all(not f.problem for f in frames)
    # The truth comes from a rigid fit of stored keypoint locations to FK: exact here.
    assert max(pose_error(f.camera_T_base_true, scene["T"])[0] for f in frames) < 1e-6
    summary = calibrate(src, robot, OracleDetector(robot, scene["uv"]), tmp_path / "out",
                        progress=False, quiet=True, mask_reference=0.8)
    recs = _check_outputs(tmp_path / "out", scene, summary, expect_ok=N_FRAMES)
    assert all(r["error_translation_m"] < 0.15 for r in recs)
    assert summary["multiframe"]["error_translation_m"] < 0.01
    assert "no frame has a robot mask" in summary["mask_reference"]["error"]   # NDDS: no masks


def test_bag_pairs_images_with_nearest_joint_states(tmp_path, scene, robot):
    from dream_ros.data.sources import BagSource
    from dream_ros.offline import calibrate
    bag = write_bag(tmp_path / "cal.bag", scene, robot, drop_joints_for=(5,))
    src = BagSource(bag, "/cam/image_raw", "/cam/camera_info", "/joint_states", robot.joint_names,
                    max_dt=0.05, truth_topic="/sim/truth")
    assert len(src) == N_FRAMES and src.camera_frame == "cam_optical"
    frames = list(src)
    # Frame 5 has no joint state of its own: the nearest is a second away, beyond max_dt.
    assert "0.990 s" in frames[5].problem and frames[5].joints is None
    for i, f in enumerate(frames):
        if i != 5:
            assert np.allclose([f.joints[n] for n in robot.joint_names], scene["q"][i])
            assert int(f.rgb[0, 0, 0]) == i       # bgr8 converted to RGB
    summary = calibrate(src, robot, OracleDetector(robot, scene["uv"]), tmp_path / "out",
                        progress=False, quiet=True)
    recs = _check_outputs(tmp_path / "out", scene, summary, expect_ok=N_FRAMES - 1)
    assert recs[5]["status"].startswith("bad_input") and recs[5]["keypoints"] is None
    assert recs[0]["stamp"] == pytest.approx(100.0)
    assert summary["multiframe"]["error_translation_m"] < 0.01      # scored against the bag's truth
    text = (tmp_path / "out" / "calibration.yaml").read_text()
    assert "camera_frame: cam_optical" in text


def test_bad_inputs_say_what_is_wrong(tmp_path, scene, robot):
    from dream_ros.data.sources import BagSource, ImageFolderSource
    from dream_ros.errors import InputError
    with pytest.raises(InputError, match="not found"):
        ImageFolderSource(tmp_path / "nope", robot.joint_names)
    folder = write_image_folder(tmp_path / "imgs", scene, robot)
    (folder / "K.txt").unlink()
    with pytest.raises(InputError, match="K.txt"):
        ImageFolderSource(folder, robot.joint_names)
    (folder / "K.txt").write_text("1 2 3\n")
    with pytest.raises(InputError, match="3x3"):
        ImageFolderSource(folder, robot.joint_names)
    np.savetxt(folder / "K.txt", scene["K"])
    (folder / "qpos" / "000001.txt").write_text("0.1 0.2\n")
    frames = list(ImageFolderSource(folder, robot.joint_names))
    assert "needs 7 finite values" in frames[1].problem
    bag = write_bag(tmp_path / "b.bag", scene, robot)
    with pytest.raises(InputError, match="no topic /wrong"):
        BagSource(bag, "/wrong", "/cam/camera_info", "/joint_states", robot.joint_names)


def test_cli_with_a_real_model_file(tmp_path, scene, robot, capsys):
    """The subcommand end to end with a real (untrained) network: runs, writes every file, and
    reports failures as values in results.jsonl."""
    from dream_ros.cli import main
    from dream_ros.network.model_file import ModelConfig, save_model
    cfg = ModelConfig.for_ours("panda", robot.keypoint_names, [k.link for k in robot.config.keypoints],
                               input_size=(W, H))
    model = save_model(tmp_path / "m.pt", cfg.build_network(), cfg)
    folder = write_image_folder(tmp_path / "imgs", scene, robot)
    out = tmp_path / "out"
    rc = main(["calibrate", "--model", str(model), "--images", str(folder), "--out", str(out),
               "--overlays", "2", "--threads", "1"])
    recs = _records(out)
    assert len(recs) == N_FRAMES and [r["frame"] for r in recs] == ["%06d" % i for i in range(N_FRAMES)]
    assert rc == (0 if any(r["status"] == "ok" for r in recs) else 1)
    assert len(list((out / "overlays").glob("*.png"))) == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == N_FRAMES
    printed = capsys.readouterr().out
    assert "%d frames" % N_FRAMES in printed and "results:" in printed
    # A wrong --robot for the model is a clear error, not a crash.
    assert main(["calibrate", "--model", str(model), "--robot", str(tmp_path / "x.yaml"),
                 "--images", str(folder), "--out", str(out)]) == 2


def test_summary_warns_when_most_frames_disagree_with_the_multi_frame_pose(capsys):
    from dream_ros.offline import print_summary
    multi = {"frames_used": 3, "frames": ["a", "b", "c"], "converged": False,
             "position_m": [0.3, -0.7, 0.9], "rpy_deg": [-120.0, 0.0, -15.0],
             "reprojection_error_px": 3.4, "calibration": "calibration.yaml"}
    summary = {"frames": 10, "ok": 10, "failures": {}, "multiframe": multi,
               "results": "results.jsonl"}
    print_summary([], summary)
    out = capsys.readouterr().out
    assert "(3 frames: a b c, not converged)" in out
    assert "only 3 of the 10 accepted frames agree" in out
    multi["frames_used"] = 6
    print_summary([], summary)
    assert "agree" not in capsys.readouterr().out
