"""KeypointDetector: raw-pixel mapping end to end, padding rejection, batching, backends."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from dream_ros.errors import ConfigError, InputError
from dream_ros.network.codec import BeliefMapCodec
from dream_ros.network.detector import KeypointDetector, pick_device
from dream_ros.network.model_file import DREAM_ARCHS, ModelConfig, save_model
from dream_ros.network.ours import build_network

NAMES = ["a", "b", "c"]


class FixedMaps(nn.Module):
    """Outputs label maps drawn by the codec at fixed output-pixel positions, whatever the image."""

    def __init__(self, xy_out, out_size):
        super().__init__()
        maps = BeliefMapCodec().encode(np.asarray(xy_out, float), np.ones(len(xy_out), bool),
                                       out_size)
        self.register_buffer("maps", torch.from_numpy(maps))
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.maps[None].expand(x.shape[0], -1, -1, -1) + 0 * self.dummy


def torch_detector(model, **kw):
    kw.setdefault("zoom", False)     # FixedMaps ignores the image, so a zoom pass would move it
    return KeypointDetector(model, device="cpu", backend="torch", **kw)


def config(preprocessing="letterbox", **kw):
    return ModelConfig.for_ours("panda", NAMES, NAMES, arch="dream_tiny_s4",
                                preprocessing=preprocessing, **kw)


def test_uv_in_raw_pixels_and_padding_rejected():
    cfg = config()
    # output 80x60 -> input 320x240 (x4) -> raw 1280x720 letterboxed into rows 30..210
    xy_out = [[40.0, 30.0], [10.25, 20.5], [40.0, 3.0]]     # the last one lies in the padding
    det = torch_detector((FixedMaps(xy_out, (80, 60)), cfg))
    out = det.detect(np.zeros((720, 1280, 3), np.uint8), return_belief=True)
    geo = cfg.make_preprocessor().geometry((1280, 720))
    expect = geo.to_raw(np.asarray(xy_out) * 4)
    assert out.names == NAMES and out.image_size == (1280, 720)
    assert out.detected.tolist() == [True, True, False]
    np.testing.assert_allclose(out.uv[:2], expect[:2], atol=0.1 * 4)
    assert np.isnan(out.uv[2]).all()
    assert out.belief_maps.shape == (3, 60, 80)
    assert det.keypoint_names == NAMES and det.config is cfg


def test_candidates_in_raw_pixels_and_off_for_dream():
    cfg = config()
    xy_out = [[40.0, 30.0], [10.25, 20.5], [40.0, 3.0]]
    det = torch_detector((FixedMaps(xy_out, (80, 60)), cfg))
    assert det.candidates == 3
    out = det.detect(np.zeros((720, 1280, 3), np.uint8))
    geo = cfg.make_preprocessor().geometry((1280, 720))
    expect = geo.to_raw(np.asarray(xy_out) * 4)
    assert [len(c) for c in out.candidates] == [1, 1, 0]       # the padding peak is off the image
    np.testing.assert_allclose(out.candidates[0][0, :2], expect[0], atol=0.4)
    np.testing.assert_allclose(out.candidates[1][0, :2], out.uv[1])
    off = torch_detector((FixedMaps(xy_out, (80, 60)), cfg), candidates=0)
    assert off.detect(np.zeros((720, 1280, 3), np.uint8)).candidates is None
    # DREAM's models report no candidates by default, so they give DREAM's outputs
    dream_cfg = dataclasses.replace(cfg, arch=sorted(DREAM_ARCHS)[0])
    assert torch_detector((FixedMaps(xy_out, (80, 60)), dream_cfg)).candidates == 0


def test_resize_mode_mapping_and_threshold_override():
    cfg = config("resize")
    det = torch_detector((FixedMaps([[20.0, 15.0]] * 3, (80, 60)), cfg))
    out = det.detect(np.zeros((480, 640, 3), np.uint8))
    np.testing.assert_allclose(out.uv, [[160.0, 120.0]] * 3, atol=0.2)
    strict = torch_detector((FixedMaps([[20.0, 15.0]] * 3, (80, 60)), cfg), threshold=0.5)
    assert not strict.detect(np.zeros((480, 640, 3), np.uint8)).detected.any()


def test_real_network_batch_equals_single(tmp_path):
    torch.manual_seed(0)
    net = build_network("dream_tiny_s4", 3)
    cfg = ModelConfig.for_ours("panda", NAMES, NAMES, arch="dream_tiny_s4", input_size=(128, 96))
    path = save_model(tmp_path / "m.pt", net, cfg, fp16=False)
    det = KeypointDetector(str(path), device="auto", backend="torch")
    assert det.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    auto = KeypointDetector(str(path), onnx_cache_dir=tmp_path)
    assert auto.backend == ("torch" if torch.cuda.is_available() else "onnx")
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for w, h in [(640, 480), (300, 200)]]
    batch = det.detect_batch(imgs, return_belief=True)
    for img, b in zip(imgs, batch):
        one = det.detect(img, return_belief=True)
        np.testing.assert_allclose(one.belief_maps, b.belief_maps, rtol=1e-4, atol=1e-5)
        assert one.uv.shape == (3, 2) and one.scores.shape == (3,) and one.detected.dtype == bool
    assert batch[1].image_size == (300, 200)


def test_onnx_backend_matches_torch(tmp_path):
    torch.manual_seed(0)
    net = build_network("dream_lite_s4", 3)
    net.train()
    net(torch.randn(4, 3, 96, 128))   # non-trivial BatchNorm statistics
    cfg = ModelConfig.for_ours("panda", NAMES, NAMES, arch="dream_lite_s4", input_size=(128, 96))
    img = np.random.default_rng(1).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    a = torch_detector((net, cfg)).detect(img, return_belief=True)
    b = KeypointDetector((net, cfg), backend="onnx", onnx_cache_dir=tmp_path).detect(
        img, return_belief=True)
    assert list(tmp_path.glob("*.onnx"))
    np.testing.assert_allclose(a.belief_maps, b.belief_maps, rtol=1e-3, atol=1e-4)


def test_errors():
    cfg = config()
    net = FixedMaps([[1.0, 1.0]] * 3, (80, 60))
    with pytest.raises(ConfigError):
        KeypointDetector((net, cfg), backend="tensorrt")
    with pytest.raises(ConfigError):
        KeypointDetector((net, cfg), bogus=1)
    with pytest.raises(ConfigError):
        pick_device("nonsense")
    det = torch_detector((net, cfg))
    with pytest.raises(InputError):
        det.detect(np.zeros((10, 10), np.uint8))
    wrong = torch_detector((FixedMaps([[1.0, 1.0]] * 2, (80, 60)), cfg))
    with pytest.raises(ConfigError, match="keypoints"):
        wrong.detect(np.zeros((48, 64, 3), np.uint8))


def test_dream_model_runs_through_detector_with_torch_backend():
    from dream_ros.network.codec import BeliefMapCodec as Codec
    from dream_ros.network.dream_arch import build_dream_network
    cfg = ModelConfig(robot="panda", keypoint_names=NAMES, keypoint_frames=NAMES, arch="vgg_q",
                      input_size=(64, 64), output_size=(16, 16), preprocessing="resize",
                      half_pixel=False, codec=Codec.dream((16, 16)).to_dict())
    det = KeypointDetector((build_dream_network("vgg_q", 3), cfg), device="cpu")
    assert det.backend == "torch" and det.codec.refine == "mean5"
    out = det.detect(np.zeros((48, 64, 3), np.uint8), return_belief=True)
    assert out.belief_maps.shape == (3, 16, 16) and out.image_size == (64, 48)


def test_a_low_peak_is_expected_to_be_less_accurate():
    from dream_ros.network.detector import SCORE_POWER, SCORE_REF, detection_sigma_px
    typical = np.array([2.0, 3.0, 4.0, 5.0])
    scores = np.array([SCORE_REF, SCORE_REF / 2, 1.0, np.nan])
    detected = np.array([True, True, True, False])
    sigma = detection_sigma_px(typical, scores, detected)
    assert sigma[0] == pytest.approx(2.0)                       # a typical peak: typical error
    assert sigma[1] == pytest.approx(3.0 * 2 ** SCORE_POWER)    # half as high: much less sure
    assert sigma[2] < 4.0                                       # higher than typical: surer
    assert sigma[3] == 5.0                                      # not detected: left as it is
    assert np.all(np.isfinite(detection_sigma_px(typical, np.zeros(4), np.ones(4, bool))))
