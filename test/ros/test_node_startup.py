"""dream_node start-up checks that need no master: the real detector is built from ~model and a
missing, corrupt or mismatched model is a ConfigError that says what to fix; parameter names are
checked; the TF child choice never gives a frame a second parent."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dream_ros.errors import ConfigError  # noqa: E402
from dream_ros.robot import RobotModel  # noqa: E402
from dream_ros.ros.node import (PARAMETERS, build_detector, check_parameter_names,  # noqa: E402
                                choose_tf_child, zoom_views_for)


@pytest.fixture(scope="module")
def robot():
    return RobotModel.load("panda")


def tiny_model(tmp_path, robot_name, names, frames_=None):
    from dream_ros.network.model_file import ModelConfig, save_model
    from dream_ros.network.ours import available_archs
    arch = "dream_lite_s4" if "dream_lite_s4" in available_archs() else available_archs()[0]
    cfg = ModelConfig.for_ours(robot_name, names, frames_ or names, arch=arch)
    path = tmp_path / ("%s.pt" % robot_name)
    save_model(path, cfg.build_network(), cfg)
    return path


def test_real_detector_is_built_from_a_model_file(tmp_path, robot):
    path = tiny_model(tmp_path, "panda", robot.keypoint_names)
    det = build_detector(str(path), robot, device="cpu", threads=1)
    out = det.detect(np.zeros((120, 160, 3), np.uint8))
    assert list(out.names) == list(robot.keypoint_names)


def test_zoom_views_follow_the_mode_unless_set(tmp_path, robot):
    assert zoom_views_for("static", 0) == 7 and zoom_views_for("continuous", 0) == 3
    assert zoom_views_for("static", 5) == 5
    path = tiny_model(tmp_path, "panda", robot.keypoint_names)
    assert len(build_detector(str(path), robot, device="cpu", threads=1, zoom_views=7).zoom_views) == 7
    with pytest.raises(ConfigError, match="zoom views"):
        build_detector(str(path), robot, device="cpu", threads=1, zoom_views=4)


def test_model_for_another_robot_is_refused(tmp_path, robot):
    path = tiny_model(tmp_path, "kuka", ["k%d" % i for i in range(7)])
    with pytest.raises(ConfigError, match="another robot|trained for robot"):
        build_detector(str(path), robot, device="cpu", threads=1)
    path = tiny_model(tmp_path, "panda", ["panda_link0", "panda_link2", "panda_link3", "x"])
    with pytest.raises(ConfigError, match="another robot"):
        build_detector(str(path), robot, device="cpu", threads=1)


def test_missing_and_corrupt_models_are_config_errors(tmp_path, robot):
    with pytest.raises(ConfigError, match="not found"):
        build_detector(str(tmp_path / "nope.pt"), robot, device="cpu", threads=1)
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"\x80\x02garbage" * 10)
    with pytest.raises(ConfigError):
        build_detector(str(bad), robot, device="cpu", threads=1)


def test_parameter_names():
    assert check_parameter_names(["mode", "multiframe/min_frames"]) is None
    msg = check_parameter_names(["mode", "modee"])
    assert "modee" in msg and "valid names" in msg and "max_reprojection_error_px" in msg
    # the shipped config file uses valid names only
    import yaml
    from dream_ros.resources import CONFIG_DIR
    names = yaml.safe_load((CONFIG_DIR / "dream_node.yaml").read_text())
    assert check_parameter_names(names) is None
    assert set(names) <= set(PARAMETERS)


def test_choose_tf_child():
    ours = {("cam_optical", "base")}
    # nothing in TF: publish to the optical frame
    assert choose_tf_child({}, ours, "base", "cam_optical") == ("cam_optical", "")
    # our own link does not count as a parent
    tf = {"cam_optical": {"parent": "base", "broadcaster": "/me"}}
    assert choose_tf_child(tf, ours, "base", "cam_optical") == ("cam_optical", "")
    # the driver publishes cam_link -> cam_color -> cam_optical: publish to the root
    tf = {"cam_optical": {"parent": "cam_color", "broadcaster": "/driver"},
          "cam_color": {"parent": "cam_link", "broadcaster": "/driver"}}
    assert choose_tf_child(tf, ours, "base", "cam_optical") == ("cam_link", "")
    # someone already connects the camera to the robot: refuse, say what to do
    tf["cam_link"] = {"parent": "world", "broadcaster": "/static_pub"}
    tf["base"] = {"parent": "world", "broadcaster": "/rsp"}
    child, why = choose_tf_child(tf, ours, "base", "cam_optical")
    assert child is None and "already connected" in why and "publish_tf" in why
    # an explicit child with a parent is refused naming the parameter
    child, why = choose_tf_child(tf, ours, "base", "cam_optical", "cam_color")
    assert child is None and "already has parent 'cam_link'" in why and "tf_child_frame" in why
