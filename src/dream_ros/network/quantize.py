"""An int8 copy of a keypoint network for ONNX Runtime on the CPU (static quantization).

ONNX Runtime's ``quantize_static`` (QDQ format, weights int8 per output channel in 7 bits,
activations uint8 with MinMax ranges) turns the exported fp32 network into one whose
convolutions run as int8 (VNNI/AVX2 kernels), all but the output head's
(``_head_convolutions``): on this machine the shipped Panda net runs a 320x240 frame in 4.3 ms
against 8.2 ms in fp32. On the 450 validation frames (panda_val_640, _b) the full pipeline
scored PCK AUC 0.695 / ADD AUC 0.547 against fp32's 0.698 / 0.545 (2 zoom crops). Percentile
ranges lost 0.02 ADD AUC (docs/evaluation.md, session 7).

The activation ranges come from calibration inputs that look like what the detector feeds the
net: whole 640x480 frames of a rendered set, and crops around their robots as the zoom pass makes
(``calibration_inputs``). The result is serialised ONNX bytes that travel inside the model file
(``ModelConfig.onnx_int8``), so the detector needs no data at run time.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Iterable, List, Optional

import numpy as np

from dream_ros.errors import ConfigError, InputError

# frames drawn from the calibration set; each gives up to 4 inputs (itself and 3 zoom crops)
DEFAULT_CALIBRATION_FRAMES = 60


def calibration_inputs(config, data_dir, frames: int = DEFAULT_CALIBRATION_FRAMES,
                       seed: int = 0) -> np.ndarray:
    """float32 (N,3,H,W) normalised network inputs from an NDDS set: per frame the whole image
    and the zoom pass's crops around its labelled keypoints (the whole robot, each half)."""
    from dream_ros.data.ndds import NddsDataset
    from dream_ros.network.model_file import keypoint_chain_order
    from dream_ros.network.zoom import ZOOM_VIEWS, crop_box, crop_image, labels_on_image
    from dream_ros.robot import RobotModel
    kinematics = RobotModel.load(config.robot)
    ds = NddsDataset(data_dir, robot_name=config.robot, keypoint_names=config.keypoint_names,
                     derive_with=kinematics)
    if len(ds) == 0:
        raise InputError("calibration set %s has no frames" % data_dir)
    pre = config.make_preprocessor()
    aspect = config.input_size[0] / config.input_size[1]
    views = ZOOM_VIEWS[3]                          # the whole robot, the base half, the tip half
    chain_order = keypoint_chain_order(config, kinematics)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(ds), size=min(int(frames), len(ds)), replace=False)
    inputs = []
    for i in sorted(pick):
        rgb, frame = ds.load_image(int(i)), ds[int(i)]
        inputs.append(pre(rgb)[0])
        uv = frame.projected
        on = labels_on_image(uv, (rgb.shape[1], rgb.shape[0]))
        for view in views:
            idx = view.keypoints(chain_order)
            box = crop_box(uv[idx[on[idx]]], aspect, view.margin, centre_shift=view.centre_shift)
            if box is not None:
                inputs.append(pre(crop_image(rgb, box))[0])
    return np.stack(inputs).astype(np.float32)


def quantize_network(net, config, inputs: np.ndarray) -> bytes:
    """Serialised int8 ONNX (QDQ) of ``net`` at the config's input size, its activation ranges
    taken from ``inputs`` (float32 (N,3,H,W))."""
    try:
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod,
                                              QuantFormat, QuantType, quantize_static)
    except ImportError as exc:
        raise ConfigError("int8 quantization needs onnxruntime with its quantization tools: %s"
                          % exc)
    from dream_ros.network.onnx_backend import INPUT_NAME, export_onnx
    w, h = config.input_size
    if inputs.ndim != 4 or inputs.shape[1:] != (3, h, w) or len(inputs) == 0:
        raise InputError("calibration inputs must be (N,3,%d,%d), got %s" % (h, w, inputs.shape))

    class Reader(CalibrationDataReader):
        def __init__(self, batches: Iterable[np.ndarray]):
            self._it = iter(batches)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {INPUT_NAME: x[None]}

    with tempfile.TemporaryDirectory(prefix="dream_ros_int8_") as tmp:
        fp32 = export_onnx(net, Path(tmp) / "fp32.onnx", config.input_size)
        out = Path(tmp) / "int8.onnx"
        # quantize_static logs a warning advising ORT's model pre-processing; with it the
        # validation scores were the same to 4 digits, so it is skipped and the warning muted
        logging.disable(logging.WARNING)
        try:
            # reduce_range: 7-bit weights. CPUs without VNNI (AVX2 only) multiply uint8
            # activations by int8 weights in pairs summed into int16 (vpmaddubsw), which
            # saturates with 8-bit weights: on such a CPU (session 13, AMD EPYC) the validation
            # score fell to 1.338 from fp32's 1.408; with 7-bit weights no pair can overflow
            # (2 x 255 x 64 < 32767) and it scored 1.410, the same on every CPU.
            quantize_static(str(fp32), str(out), Reader(list(inputs)),
                            quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax,
                            nodes_to_exclude=_head_convolutions(fp32))
        finally:
            logging.disable(logging.NOTSET)
        return out.read_bytes()


def _head_convolutions(onnx_path) -> List[str]:
    """The output head's convolutions (our nets' ``head`` module), which stay fp32: the belief
    maps' fine values place the sub-pixel peaks. On the 450 validation frames the final model's
    ADD AUC was 0.532 with them in int8, 0.547 without, 0.545 in fp32; they cost 0.8 ms."""
    import onnx
    graph = onnx.load(str(onnx_path)).graph
    return [n.name for n in graph.node if n.op_type == "Conv" and n.name.startswith("/head/")]


def add_int8(model: str, data_dir: str, to: Optional[str] = None,
             frames: int = DEFAULT_CALIBRATION_FRAMES) -> List[str]:
    """Quantize a model file's network on ``data_dir`` and write the file (``to``, default in
    place, atomically) with the int8 network inside. Returns report lines."""
    from dream_ros.network.model_file import load_model, resolve_model_path, save_model
    net, config = load_model(model)
    if config.is_dream:
        raise ConfigError("int8 networks are made for our architectures; DREAM's models run as "
                          "DREAM's (torch, fp32)")
    if config.preprocessing == "none":
        raise ConfigError("an int8 network needs a fixed input size: preprocessing 'none' "
                          "feeds the net images of any size")
    inputs = calibration_inputs(config, data_dir, frames)
    config.onnx_int8 = quantize_network(net, config, inputs)
    dest = Path(to) if to else resolve_model_path(model)
    save_model(dest, net, config)
    return ["int8 network calibrated on %d inputs (frames and zoom crops) from %s: %.2f MB"
            % (len(inputs), data_dir, len(config.onnx_int8) / 1e6), "written: %s" % dest]


# ------------------------------------------------------------- CLI: python -m dream_ros quantize
def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="our model file (or robot name) to quantize")
    p.add_argument("--data", required=True,
                   help="rendered NDDS set (640x480 like the camera) for the activation ranges")
    p.add_argument("--to", default=None, help="output model file (default: overwrite --model)")
    p.add_argument("--frames", type=int, default=DEFAULT_CALIBRATION_FRAMES,
                   help="frames drawn from --data (default %d; each adds its zoom crops)"
                   % DEFAULT_CALIBRATION_FRAMES)


def run(args) -> int:
    if args.frames < 1:
        raise InputError("--frames must be >= 1")
    for line in add_int8(args.model, args.data, args.to, args.frames):
        print(line)
    return 0
