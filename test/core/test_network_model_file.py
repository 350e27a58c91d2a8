"""Model files: ours round-trips (fp16 storage), DREAM .pth + !!omap YAML loads strictly."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
import yaml

from dream_ros.errors import ConfigError
from dream_ros.network import model_file
from dream_ros.network.codec import BeliefMapCodec
from dream_ros.network.dream_arch import build_dream_network
from dream_ros.network.model_file import (ModelConfig, dream_config_from_yaml, load_model,
                                          load_state_strict, omap_to_dict, save_dream_model,
                                          save_model)
from dream_ros.network.ours import build_network

PANDA = ["panda_link0", "panda_link2", "panda_link3", "panda_link4", "panda_link6", "panda_link7",
         "panda_hand"]

DREAM_YAML = """\
!!omap
- manipulator: !!omap
  - name: panda
  - keypoints:
{keypoints}
- architecture: !!omap
  - type: vgg
  - target: belief_maps
  - input_heads:
    - image_rgb
  - output_heads:
    - belief_maps
  - image_normalization: !!omap
    - mean:
      - 0.5
      - 0.5
      - 0.5
    - stdev:
      - 0.5
      - 0.5
      - 0.5
  - loss: !!omap
    - type: mse
  - image_preprocessing: resize
- training: !!omap
  - config: !!omap
    - epochs: 25
    - net_input_resolution:
      - 400
      - 400
    - net_output_resolution:
      - 100
      - 100
    - optimizer: !!omap
      - type: adam
      - learning_rate: 0.00015
  - platform: !!omap
    - gpu_ids: null
"""


def write_dream_yaml(path, names):
    kps = "\n".join(f"    - !!omap\n      - name: {n}\n      - friendly_name: {n}\n"
                    f"      - ros_frame: {n}" for n in names)
    path.write_text(DREAM_YAML.format(keypoints=kps))


def test_dream_pth_with_module_prefix_and_omap_yaml_reproduces_outputs(tmp_path):
    torch.manual_seed(0)
    ref = build_dream_network("vgg_q", 7).eval()
    sd = OrderedDict(("module." + k, v) for k, v in ref.state_dict().items())
    torch.save(sd, tmp_path / "panda_dream_vgg_q.pth")
    write_dream_yaml(tmp_path / "panda_dream_vgg_q.yaml", PANDA)
    net, cfg = load_model(tmp_path / "panda_dream_vgg_q.pth")
    assert not net.training
    assert cfg.arch == "vgg_q" and cfg.keypoint_names == PANDA and cfg.robot == "panda"
    assert cfg.input_size == (400, 400) and cfg.output_size == (100, 100)
    assert cfg.preprocessing == "resize" and cfg.half_pixel is False
    codec = cfg.make_codec()
    assert codec.peak_offset == pytest.approx(0.4395) and codec.refine == "mean5"
    assert cfg.training["training"]["config"]["optimizer"]["learning_rate"] == 0.00015
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(net(x), ref(x), rtol=0, atol=0)


def test_dream_format_writer_round_trips(tmp_path):
    torch.manual_seed(1)
    write_dream_yaml(tmp_path / "src.yaml", PANDA)
    cfg = dream_config_from_yaml(tmp_path / "src.yaml")
    ref = build_dream_network("vgg_q", 7).eval()
    out = save_dream_model(tmp_path / "out" / "copy.pth", ref, cfg)
    text = (tmp_path / "out" / "copy.yaml").read_text()
    assert text.startswith("!!omap") and "- manipulator: !!omap" in text
    assert all(k.startswith("module.") for k in torch.load(out, weights_only=True))
    net, cfg2 = load_model(out)
    assert cfg2.keypoint_names == PANDA and cfg2.arch == "vgg_q" and cfg2.codec == cfg.codec
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(net(x), ref(x), rtol=0, atol=0)
    # without the original YAML: built from the ModelConfig
    cfg.extra = {}
    save_dream_model(tmp_path / "b.pth", ref, cfg)
    assert dream_config_from_yaml(tmp_path / "b.yaml").to_dict()["keypoint_frames"] == PANDA


def test_dream_mismatch_names_every_problem(tmp_path):
    ref = build_dream_network("vgg_q", 7)
    sd = OrderedDict(("module." + k, v) for k, v in ref.state_dict().items())
    del sd["module.heads_0.0.bias"]
    sd["module.extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "m.pth")
    write_dream_yaml(tmp_path / "m.yaml", PANDA[:6])     # 6 keypoints: last layer mismatches
    with pytest.raises(ConfigError) as err:
        load_model(tmp_path / "m.pth")
    msg = str(err.value)
    assert "missing: heads_0.0.bias" in msg and "unexpected: extra.weight" in msg
    assert "heads_0.4.weight: file (7, 32, 3, 3) vs network (6, 32, 3, 3)" in msg


def test_dream_without_yaml_and_bad_yaml(tmp_path):
    torch.save(build_dream_network("vgg_q", 7).state_dict(), tmp_path / "a.pth")
    with pytest.raises(ConfigError, match="yaml"):
        load_model(tmp_path / "a.pth")
    (tmp_path / "a.yaml").write_text("!!omap\n- manipulator: !!omap\n  - name: panda\n")
    with pytest.raises(ConfigError, match="manipulator.keypoints"):
        load_model(tmp_path / "a.pth")


def test_dream_resnet_yaml_and_missing_num_batches_tracked_tolerated(tmp_path):
    write_dream_yaml(tmp_path / "kuka.yaml", [f"iiwa7_link_{i}" for i in range(8)])
    text = (tmp_path / "kuka.yaml").read_text().replace("type: vgg", "type: resnet").replace(
        "      - 100\n      - 100", "      - 208\n      - 208")
    (tmp_path / "kuka.yaml").write_text(text)
    cfg = dream_config_from_yaml(tmp_path / "kuka.yaml")
    assert cfg.arch == "resnet_h" and cfg.output_size == (208, 208) and cfg.num_keypoints == 8
    # BatchNorm nets: files without num_batches_tracked load (a small BN net stands in for ResNet)
    ref = build_network("dream_tiny_s4", 8).eval()
    sd = OrderedDict(("module." + k, v) for k, v in ref.state_dict().items()
                     if not k.endswith("num_batches_tracked"))
    net = build_network("dream_tiny_s4", 8)
    load_state_strict(net, sd)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(net.eval()(x), ref(x))


def test_declared_output_resolution_checked(tmp_path):
    write_dream_yaml(tmp_path / "c.yaml", PANDA)
    text = (tmp_path / "c.yaml").read_text().replace("      - 100\n      - 100",
                                                     "      - 50\n      - 50")
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match="net_output_resolution"):
        dream_config_from_yaml(tmp_path / "c.yaml")


def test_omap_conversion_keeps_order_and_nesting():
    raw = yaml.safe_load("!!omap\n- b: 1\n- a: !!omap\n  - z: [1, 2]\n  - y: x\n- c: [3]\n")
    d = omap_to_dict(raw)
    assert list(d) == ["b", "a", "c"] and list(d["a"]) == ["z", "y"]
    assert d["a"]["z"] == [1, 2] and d["c"] == [3]


def test_our_file_round_trip_fp16(tmp_path):
    torch.manual_seed(0)
    net = build_network("dream_tiny_s4", 7)
    net.train()
    net(torch.randn(2, 3, 64, 64))      # non-trivial BN running stats
    net.eval()
    cfg = ModelConfig.for_ours("panda", PANDA, PANDA, arch="dream_tiny_s4",
                               training={"images_seen": 1000}, metrics={"pck_auc": 0.5})
    path = save_model(tmp_path / "sub" / "m.pt", net, cfg)
    assert not list((tmp_path / "sub").glob("*.tmp"))
    blob = torch.load(path, weights_only=True)
    assert blob["state_dict"]["head.1.weight"].dtype == torch.float16
    net2, cfg2 = load_model(path)
    assert cfg2 == cfg and cfg2.output_size == (80, 60)
    assert all(p.dtype == torch.float32 for p in net2.parameters())
    x = torch.randn(1, 3, 96, 128)
    with torch.inference_mode():
        torch.testing.assert_close(net2(x), net(x), rtol=0.02, atol=2e-3)
    path32 = save_model(tmp_path / "m32.pt", net, cfg, fp16=False)
    with torch.inference_mode():
        torch.testing.assert_close(load_model(path32)[0](x), net(x), rtol=0, atol=0)


def test_keypoint_sigmas_travel_with_the_model_to_the_detections(tmp_path):
    from dream_ros.network.detector import KeypointDetector, detection_sigma_px
    sigma = [2.0, 1.5, 3.0, 2.5, 5.0, 4.0, 3.5]
    cfg = ModelConfig.for_ours("panda", PANDA, PANDA, arch="dream_tiny_s4",
                               keypoint_sigma_px=sigma)
    path = save_model(tmp_path / "m.pt", build_network("dream_tiny_s4", 7), cfg)
    det = KeypointDetector(str(path), device="cpu", backend="torch").detect(
        np.zeros((240, 320, 3), np.uint8))
    np.testing.assert_allclose(det.sigma_px, detection_sigma_px(sigma, det.scores, det.detected))
    np.testing.assert_allclose(det.sigma_px[~det.detected], np.array(sigma)[~det.detected])
    with pytest.raises(ConfigError, match="keypoint_sigma_px"):
        ModelConfig.for_ours("panda", PANDA, PANDA, arch="dream_tiny_s4", keypoint_sigma_px=[1.0])
    with pytest.raises(ConfigError, match="keypoint_sigma_px"):
        ModelConfig.for_ours("panda", PANDA, PANDA, arch="dream_tiny_s4",
                             keypoint_sigma_px=[1.0] * 6 + [0.0])


def test_robot_name_resolves_to_default_model(tmp_path, monkeypatch):
    monkeypatch.setattr(model_file, "MODELS_DIR", tmp_path)
    with pytest.raises(ConfigError, match="no default model for robot 'panda'"):
        load_model("panda")
    net = build_network("dream_tiny_s4", 7)
    save_model(tmp_path / "panda_default.pt", net,
               ModelConfig.for_ours("panda", PANDA, PANDA, arch="dream_tiny_s4"))
    net2, cfg = load_model("panda")
    assert cfg.robot == "panda" and cfg.make_codec() == BeliefMapCodec()
    # another keypoint set of the Panda runs the Panda's shipped model; other robots do not
    assert model_file.resolve_model_path("panda_extended") == tmp_path / "panda_default.pt"
    with pytest.raises(ConfigError, match="no default model for robot 'kuka'"):
        model_file.resolve_model_path("kuka")
    assert cfg.make_preprocessor().mode == "letterbox"


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_model(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="cannot read"):
        load_model(tmp_path / "junk.pt")
    with pytest.raises(ConfigError):
        ModelConfig.for_ours("panda", PANDA, PANDA[:3])
    with pytest.raises(ConfigError):
        ModelConfig.from_dict({"robot": "panda"})


def test_model_must_fit_the_robot():
    from dream_ros.network.model_file import check_model_fits_robot
    from dream_ros.robot import RobotModel
    robot = RobotModel.load("panda")
    names = list(robot.keypoint_names)
    fits = ModelConfig.for_ours("panda", names, names)
    check_model_fits_robot("m.pt", fits, robot, "FIX")
    cases = [(ModelConfig.for_ours("panda", names[:4] + ["x"], names[:4] + ["x"]), "another robot"),
             (ModelConfig.for_ours("panda", names[:5], names[:5]), "lacks panda_link7, panda_hand"),
             (ModelConfig.for_ours("kuka", names, names), "trained for robot 'kuka'")]
    for config, message in cases:
        with pytest.raises(ConfigError, match=message) as err:
            check_model_fits_robot("m.pt", config, robot, "FIX")
        assert "m.pt" in str(err.value) and "FIX" in str(err.value)


def test_a_model_of_another_keypoint_set_of_the_robot_brings_its_config():
    """robot:=panda with an 11-keypoint panda_extended model: forward kinematics must give the
    model's keypoints, so the model's config (same URDF, base and joints) is used; a model of
    another robot is still refused."""
    from dream_ros.network.model_file import robot_for_model
    from dream_ros.robot import RobotModel
    panda = RobotModel.load("panda")
    assert robot_for_model("m.pt", ModelConfig.for_ours("panda", PANDA, PANDA), panda, "F") is panda
    ext = RobotModel.load("panda_extended")
    names = list(ext.keypoint_names)
    used = robot_for_model("m.pt", ModelConfig.for_ours("panda_extended", names, names), panda, "F")
    assert used.config.name == "panda_extended" and used.keypoint_names == names
    assert used.joint_names == panda.joint_names and used.base_frame == panda.base_frame
    with pytest.raises(ConfigError, match="another robot"):
        robot_for_model("m.pt", ModelConfig.for_ours("panda_extended", names + ["x"],
                                                     names + ["x"]), panda, "F")
    kuka = RobotModel.load("kuka")
    with pytest.raises(ConfigError, match="m.pt"):
        robot_for_model("m.pt", ModelConfig.for_ours("panda_extended", names, names), kuka, "F")
