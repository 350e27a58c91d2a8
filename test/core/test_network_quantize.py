"""int8 networks: quantized from calibration frames, carried in the model file, picked by the
detector on the CPU, and refused with a clear error when absent or broken."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dream_ros.cli import main
from dream_ros.errors import ConfigError
from dream_ros.network.detector import KeypointDetector
from dream_ros.network.model_file import ModelConfig, load_model, save_model
from dream_ros.network.onnx_backend import OnnxRunner
from dream_ros.network.ours import build_network
from dream_ros.network.quantize import calibration_inputs, quantize_network
from dream_ros.robot_config import load_robot_config

TINY = Path(__file__).resolve().parents[1] / "data" / "panda_tiny"
pytestmark = pytest.mark.skipif(not TINY.is_dir(), reason="tiny rendered dataset missing")


def _net_and_config(input_size=(128, 96)):
    robot = load_robot_config("panda")
    names = [k.name for k in robot.keypoints]
    torch.manual_seed(0)
    net = build_network("dream_tiny_s4", len(names))
    net.train()
    with torch.no_grad():
        net(torch.randn(8, 3, input_size[1], input_size[0]))   # non-trivial BatchNorm statistics
    cfg = ModelConfig.for_ours("panda", names, [k.link for k in robot.keypoints],
                               arch="dream_tiny_s4", input_size=input_size)
    return net.eval(), cfg


@pytest.fixture(scope="module")
def quantized():
    net, cfg = _net_and_config()
    inputs = calibration_inputs(cfg, TINY, frames=6)
    return net, cfg, inputs, quantize_network(net, cfg, inputs)


def test_calibration_takes_frames_and_zoom_crops(quantized):
    _, cfg, inputs, _ = quantized
    w, h = cfg.input_size
    # 6 frames, each with the whole-robot crop and one per half of the arm where labels allow
    assert inputs.dtype == np.float32 and inputs.shape[1:] == (3, h, w)
    assert 6 < len(inputs) <= 24
    assert -1.01 <= inputs.min() and inputs.max() <= 1.01       # normalised as the detector does


def test_int8_network_is_quantized_and_tracks_fp32(quantized):
    import onnx
    net, cfg, inputs, data = quantized
    graph = onnx.load_from_string(data).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.node}
    # the output head stays fp32: its convolutions take their weights straight from fp32
    # initializers, the others from DequantizeLinear
    floats = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    head = [n for n in convs if n.name.startswith("/head/")]
    assert len(head) == 2 and all(n.input[1] in floats for n in head)
    assert all(n.input[1] not in floats for n in convs if n not in head)
    x = inputs[:3]
    fp32 = net(torch.from_numpy(x)).detach().numpy()
    int8 = OnnxRunner(data, num_threads=1).run(x)
    assert int8.shape == fp32.shape
    err = np.abs(int8 - fp32).max()
    assert 0 < err < 0.1 * np.abs(fp32).max()      # rounded, not another network
    assert np.corrcoef(int8.ravel(), fp32.ravel())[0, 1] > 0.98


def test_model_file_carries_it_and_auto_picks_it(quantized, tmp_path):
    net, cfg, _, data = quantized
    plain = save_model(tmp_path / "plain.pt", net, cfg)
    cfg8 = ModelConfig.from_dict(dict(cfg.to_dict(), onnx_int8=data))
    with8 = save_model(tmp_path / "int8.pt", net, cfg8)
    assert load_model(str(with8))[1].onnx_int8 == data
    assert load_model(str(plain))[1].onnx_int8 == b""
    assert "onnx_int8" not in repr(cfg8)
    assert KeypointDetector(str(with8), device="cpu").backend == "onnx-int8"
    assert KeypointDetector(str(plain), device="cpu").backend == "onnx"
    assert KeypointDetector(str(with8), device="cpu", backend="onnx").backend == "onnx"
    img = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    det = KeypointDetector(str(with8), device="cpu").detect(img, return_belief=True)
    assert det.belief_maps.shape == (7, 24, 32)
    with pytest.raises(ConfigError, match="quantize"):
        KeypointDetector(str(plain), device="cpu", backend="onnx-int8")
    broken = ModelConfig.from_dict(dict(cfg.to_dict(), onnx_int8=b"not an onnx model"))
    with pytest.raises(ConfigError, match="ONNX Runtime cannot load"):
        KeypointDetector((net, broken), device="cpu")
    with pytest.raises(ConfigError, match="onnx_int8 must be bytes"):
        ModelConfig.from_dict(dict(cfg.to_dict(), onnx_int8="text"))


def test_quantize_command_adds_it_in_place(tmp_path, capsys):
    net, cfg = _net_and_config()
    path = save_model(tmp_path / "m.pt", net, cfg)
    assert main(["quantize", "--model", str(path), "--data", str(TINY), "--frames", "3"]) == 0
    assert "int8 network calibrated on" in capsys.readouterr().out
    net2, cfg2 = load_model(str(path))
    assert cfg2.onnx_int8 and path.stat().st_mode & 0o044       # readable by others too
    torch.testing.assert_close(net2.state_dict(), net.state_dict(), atol=1e-3, rtol=1e-3)
    assert main(["quantize", "--model", str(path), "--data", str(tmp_path / "gone")]) == 2
    assert "not found" in capsys.readouterr().err
    free = save_model(tmp_path / "free.pt", net, ModelConfig.from_dict(
        dict(cfg.to_dict(), preprocessing="none")))
    assert main(["quantize", "--model", str(free), "--data", str(TINY)]) == 2
    assert "fixed input size" in capsys.readouterr().err


def test_int8_weights_cannot_saturate_cpus_without_vnni(quantized):
    """AVX2 CPUs without VNNI sum uint8 x int8 products in pairs into int16: with weights beyond
    7 bits a pair saturates (2 x 255 x 128 > 32767) and the int8 network drifts from fp32 on those
    CPUs only. Every quantized weight must stay within 7 bits."""
    import onnx
    from onnx import numpy_helper
    data = quantized[3]
    graph = onnx.load_from_string(data).graph
    weights = [numpy_helper.to_array(t) for t in graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert weights, "no int8 convolution weights in the quantized network"
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64
