"""ONNX export of a keypoint network and inference with ONNX Runtime (CPU).

ONNX Runtime fuses BatchNorm into the convolutions and runs our small nets about twice as fast as
eager torch on this 2-core CPU (scripts/bench_network.py prints both), so the detector uses it
when asked (backend="onnx"). Export uses torch's TorchScript-based exporter (``dynamo=False``):
the dynamo exporter needs onnxscript, which is not installed. The batch axis is dynamic; the
spatial size is fixed at export time (every preprocessing mode but "none" gives one input size).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from dream_ros.errors import ConfigError

INPUT_NAME = "image"
OUTPUT_NAME = "belief_maps"
OPSET = 17


def export_onnx(net: nn.Module, path: Union[str, Path], input_size: Sequence[int],
                opset: int = OPSET) -> Path:
    """Write ``net`` (eval mode, fp32, CPU copy) to ``path`` for (B, 3, H, W) inputs, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = int(input_size[0]), int(input_size[1])
    was_training = net.training
    dev = next(net.parameters()).device
    net = net.eval().float().cpu()
    dummy = torch.zeros(1, 3, h, w)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # the TorchScript exporter's deprecation notice
            torch.onnx.export(net, (dummy,), tmp, input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], opset_version=opset,
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                              do_constant_folding=True, dynamo=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        net.to(dev).train(was_training)
    return path


class OnnxRunner:
    """Runs an exported network with ONNX Runtime: ``run(x float32 (B,3,H,W)) -> (B,K,h,w)``."""

    def __init__(self, onnx_model: Union[str, Path, bytes], num_threads: Optional[int] = None):
        """``onnx_model``: a file or serialised ONNX bytes (e.g. a model file's int8 network)."""
        try:
            import onnxruntime as ort
        except ImportError as exc:   # listed in requirements.txt; missing only in odd installs
            raise ConfigError(f"backend 'onnx' needs onnxruntime: {exc}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = int(num_threads) if num_threads else torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # no busy-waiting between ops: on a shared, busy machine spinning threads steal the cores
        # the other thread needs (measured: lower median latency with spinning off under load)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        in_memory = isinstance(onnx_model, (bytes, bytearray))
        self.path = None if in_memory else Path(onnx_model)
        try:
            self.session = ort.InferenceSession(bytes(onnx_model) if in_memory else str(self.path),
                                                sess_options=opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:    # ORT raises its own types for corrupt or foreign models
            raise ConfigError("ONNX Runtime cannot load the network %s: %s"
                              % ("(in the model file)" if in_memory else self.path,
                                 str(exc).strip()[:300]))

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]

    @classmethod
    def from_network(cls, net: nn.Module, input_size: Sequence[int],
                     cache_dir: Optional[Union[str, Path]] = None,
                     num_threads: Optional[int] = None) -> "OnnxRunner":
        """Export (cached by a hash of the weights and input size) and open a session."""
        cache = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "dream_ros_onnx"
        path = cache / f"{_fingerprint(net, input_size)}.onnx"
        if not path.is_file():
            export_onnx(net, path, input_size)
        return cls(path, num_threads=num_threads)


def _fingerprint(net: nn.Module, input_size: Sequence[int]) -> str:
    h = hashlib.sha1()
    arch = getattr(net, "arch", "")
    h.update(f"{type(net).__name__}:{arch}:{tuple(input_size)}:{torch.__version__}".encode())
    for k, v in net.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]
