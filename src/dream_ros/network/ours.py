"""Our keypoint networks for real-time CPU inference and training on 2-core machines.

A small ResNet-style encoder (BasicBlocks, BatchNorm, stride-4 stem, strides 4..32) with an
FPN-style top-down decoder back to stride 4, then a small head giving linear belief maps (no
sigmoid), one channel per keypoint. Input: any H, W divisible by 4 (the default 320x240 is not
divisible by 32, so the decoder upsamples to each lateral's size); output (H/4, W/4).

Why this shape: DREAM's 400x400 nets cost 80-175 GFLOPs, 0.7-2 s per forward on this CPU. A
stride-4 output keeps the decoder cheap (80x60 maps at 320x240), and the stride-4 stem does the
high-resolution work with few channels. Measured with ``scripts/bench_network.py --cpu-time``
(1 thread, process CPU time, so robust to the shared machine's load; 320x240, 7 keypoints):

    arch             GFLOPs  params  torch NCHW  torch ch.last  ONNX RT  training (batch 8)
    dream_lite_s4     1.98   2.89M     30.5 ms       24.0 ms   19.0 ms   14.7 img/CPU-s
    dream_res18_s4    2.83   2.99M     38.0 ms       33.9 ms   26.5 ms   10.6 img/CPU-s
    dream_tiny_s4     0.91   0.92M     15.9 ms       13.4 ms    9.8 ms   29.8 img/CPU-s
    dream_tiny_deep_s4 1.21  1.79M     19.6 ms       18.0 ms   12.2 ms   21.3 img/CPU-s *
    dream_tiny_deeper_s4 1.52 2.66M    20.9 ms       18.8 ms   14.9 ms   ~14 img/CPU-s **
    dream_wide_s4     2.03   4.57M     31.4 ms       28.0 ms   20.2 ms   0.80x deeper ***

(training: forward + backward + AdamW step, channels_last, process CPU time, 2026-11-24;
* measured in session 3 beside a training run, where tiny gave 26.6 img/CPU-s; ** session 4,
forward beside a training run, training: its own run's 27 img/s on 2 threads; *** session 10,
beside rendering and training, where deeper took 26.9 / 24.3 / 15.4 ms; training in bf16,
batch 24: 26.8 img/CPU-s against deeper's 33.5.)
dream_tiny_s4 stopped improving at 0.50 validation PCK AUC after 400k images, with training and
validation frames scoring alike (under-fitting, not over-fitting): dream_tiny_deep_s4 doubles the
parameters where they are cheap, on the stride-8..32 maps, and is grown from a trained tiny net.
It plateaued at 0.61; dream_tiny_deeper_s4 grows it once more the same way, and dream_wide_s4
widens its stride-16 and stride-32 stages (grow_state_dict).
Default ``dream_lite_s4``: within the 25 ms budget even on one core and ~30% cheaper to run
and train than dream_res18_s4 (the probe's ResNet-18-like 2x[32,64,128,256] encoder, here with
a 96-channel decoder; cpu-training-probe.md) at the same parameter count: one block fewer at
stride 4, where a block costs most. ``dream_tiny_s4`` trains 2x more images per CPU-second;
which one is more accurate per training hour is for training to show.
Do not change an existing entry of _ARCHS: saved models rebuild their net from its name.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from dream_ros.errors import ConfigError

# arch -> settings. stem: channels of the two stride-2 stem convs; widths/blocks: per encoder stage
# (strides 4, 8, 16, 32); dec: decoder channels; head: hidden channels of the head.
_ARCHS: Dict[str, dict] = {
    # default: probe-like encoder with one block fewer at stride 4 and a 64-channel decoder
    "dream_lite_s4": dict(stem=(24, 32), widths=(32, 64, 128, 256), blocks=(1, 2, 2, 2),
                          dec=64, head=64),
    # the measured probe: ResNet-18-like 32/64/128/256, two blocks per stage
    "dream_res18_s4": dict(stem=(32, 32), widths=(32, 64, 128, 256), blocks=(2, 2, 2, 2),
                           dec=96, head=64),
    # lighter still, for slower machines
    "dream_tiny_s4": dict(stem=(16, 24), widths=(24, 48, 96, 192), blocks=(1, 1, 2, 1),
                          dec=48, head=48),
    # dream_tiny_s4 plus one block at strides 8, 16 and 32: 2x the parameters for little compute
    # (the new blocks run on small maps). Every tiny weight has the same name and shape here and
    # new blocks start as identities, so `train --init <tiny model>` grows a trained tiny net
    # without changing its output.
    "dream_tiny_deep_s4": dict(stem=(16, 24), widths=(24, 48, 96, 192), blocks=(1, 2, 3, 2),
                               dec=48, head=48),
    # dream_tiny_deep_s4 plus one more block at strides 8, 16 and 32, grown the same way from a
    # trained dream_tiny_deep_s4 (which had plateaued at 0.61 validation PCK AUC)
    "dream_tiny_deeper_s4": dict(stem=(16, 24), widths=(24, 48, 96, 192), blocks=(1, 3, 4, 3),
                                 dec=48, head=48),
    # dream_tiny_deeper_s4 with its stride-16 and stride-32 stages widened (96 -> 128, 192 -> 256):
    # 1.7x the parameters for 0.8x the training images per CPU-second (bf16, 2026-11-25), on the
    # small maps that hold the context which tells the arm's look-alike links apart. Grown from a
    # trained deeper net by `train --init` without changing its output (grow_state_dict).
    "dream_wide_s4": dict(stem=(16, 24), widths=(24, 48, 128, 256), blocks=(1, 3, 4, 3),
                          dec=48, head=48),
}

# Public facts per architecture: output stride and default network input (W, H).
NETWORK_INFO: Dict[str, dict] = {name: dict(stride=4, default_input=(320, 240)) for name in _ARCHS}

INPUT_MULTIPLE = 4   # input W and H must be multiples of the output stride


def available_archs() -> List[str]:
    return sorted(_ARCHS)


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs + identity or 1x1 projection shortcut)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


class KeypointNet(nn.Module):
    """Encoder (strides 4..32) + FPN top-down decoder to stride 4 + belief-map head."""

    stride = 4

    def __init__(self, num_keypoints: int, stem: Sequence[int], widths: Sequence[int],
                 blocks: Sequence[int], dec: int, head: int):
        super().__init__()
        self.num_keypoints = int(num_keypoints)
        self.stem = nn.Sequential(_conv_bn_relu(3, stem[0], 2), _conv_bn_relu(stem[0], stem[1], 2))
        stages = []
        cin = stem[1]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            layers = [BasicBlock(cin, w, 1 if i == 0 else 2)]
            layers += [BasicBlock(w, w) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.lateral = nn.ModuleList([nn.Conv2d(w, dec, 1) for w in widths])
        self.smooth = _conv_bn_relu(dec, dec)
        self.head = nn.Sequential(_conv_bn_relu(dec, head), nn.Conv2d(head, self.num_keypoints, 1))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero-init the last BN of each residual branch: blocks start as identities (trains faster).
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)
        # Small final layer: output starts near the all-zero map the labels mostly are.
        final = self.head[-1]
        nn.init.normal_(final.weight, std=1e-3)
        nn.init.zeros_(final.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        y = self.stem(x)
        for stage in self.stages:
            y = stage(y)
            feats.append(y)
        top = self.lateral[-1](feats[-1])
        for i in range(len(feats) - 2, -1, -1):
            lat = self.lateral[i](feats[i])
            # size-based upsampling: inputs not divisible by 32 (e.g. 240 rows) give odd-sized maps
            top = F.interpolate(top, size=lat.shape[-2:], mode="nearest") + lat
        return self.head(self.smooth(top))


def build_network(arch: str, num_keypoints: int) -> nn.Module:
    """A freshly initialised network of one of our architectures (see ``available_archs()``)."""
    if arch not in _ARCHS:
        raise ConfigError(f"unknown architecture {arch!r}; ours are {available_archs()}")
    if int(num_keypoints) < 1:
        raise ConfigError(f"num_keypoints must be >= 1, got {num_keypoints}")
    net = KeypointNet(int(num_keypoints), **_ARCHS[arch])
    net.arch = arch
    return net


def grow_state_dict(source: Dict[str, torch.Tensor], net: nn.Module) -> int:
    """Load ``source`` (a smaller net of this family) into ``net`` so that ``net`` computes the
    same maps; returns how many tensors came from ``source``.

    Hand-written because torch has no function-preserving growth (Net2Net-style): a tensor of the
    same name whose every dimension is no larger fills the leading slice of ``net``'s (the old
    channels keep their weights and BatchNorm statistics); a convolution's weights from new input
    channels into old output channels are zeroed, so whatever the new channels carry cannot reach
    the old ones. New output channels keep their fresh initialisation and start learning as soon
    as the layers after them weigh them in; new blocks start as identities (zero-init last BN).
    """
    mine = net.state_dict()
    used = 0
    for name, old in source.items():
        new = mine.get(name)
        if new is None or new.dim() != old.dim() or any(a > b for a, b in zip(old.shape, new.shape)):
            continue
        lead = tuple(slice(0, n) for n in old.shape)
        new[lead] = old.to(new.dtype)
        if new.dim() >= 2 and new.shape[1] > old.shape[1]:
            new[: old.shape[0], old.shape[1]:] = 0
        used += 1
    net.load_state_dict(mine)
    return used


def check_input_size(width: int, height: int) -> None:
    """Our nets need W and H divisible by the output stride (4)."""
    if width % INPUT_MULTIPLE or height % INPUT_MULTIPLE or width <= 0 or height <= 0:
        raise ConfigError(f"network input {width}x{height} must be positive multiples of "
                          f"{INPUT_MULTIPLE}")
