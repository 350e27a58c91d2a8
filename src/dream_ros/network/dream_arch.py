"""DREAM's released architectures (VGG-Q, VGG-F, ResNet-H, ResNet-F) with DREAM's state_dict layout.

Written from the interface facts in dream-compat.md §1 (key names, shapes, layer order), not from
DREAM's code. torchvision cannot be imported beside the CPU torch wheel on our machines, so the
VGG-19 and ResNet-101 backbones are rebuilt here with torchvision's module layout (same attribute
names and Sequential indices), which is what DREAM's weight files are keyed by. No pretrained
weights are downloaded: these are shells for DREAM's released .pth files.

Each network maps a normalised (B,3,H,W) image to the last head's linear belief maps (B,K,h,w).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Tuple

import torch
from torch import nn

from dream_ros.errors import ConfigError

DREAM_ARCHS = ("vgg_q", "vgg_f", "resnet_h", "resnet_f")

# Output size of each architecture for a (W, H) input; DREAM feeds 400x400.
DREAM_DEFAULT_INPUT = (400, 400)

# VGG-19 `features`: conv widths per group; "M" = 2x2 max-pool. torchvision indices follow from it.
_VGG19_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512]
# DREAM slices `features` into five groups by torchvision index: [start, stop).
_VGG_GROUPS = (("layer_0_1_down", 0, 4), ("layer_0_2_down", 4, 9), ("layer_0_3_down", 9, 18),
               ("layer_0_4_down", 18, 27), ("layer_0_5_down", 27, 36))


def _vgg19_features() -> List[nn.Module]:
    layers: List[nn.Module] = []
    cin = 3
    for v in _VGG19_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
            cin = v
    return layers


def _indexed(modules: Dict[int, nn.Module]) -> nn.Sequential:
    """A Sequential whose children keep given (possibly non-contiguous) integer names."""
    return nn.Sequential(OrderedDict((str(i), m) for i, m in sorted(modules.items())))


def _head(num_keypoints: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(64, 32, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(32, num_keypoints, 3, padding=1))


class DreamVGG(nn.Module):
    """VGG-19 hourglass. decoder="q": 2 nearest-upsample blocks (stride 4);
    "f": 4 transposed-conv blocks (stride 1)."""

    def __init__(self, num_keypoints: int, decoder: str = "q"):
        super().__init__()
        if decoder not in ("q", "f"):
            raise ConfigError(f"DREAM VGG decoder must be 'q' or 'f', got {decoder!r}")
        self.decoder = decoder
        feats = _vgg19_features()
        for name, a, b in _VGG_GROUPS:
            setattr(self, name, _indexed({i: feats[i] for i in range(a, b)}))
        if decoder == "q":
            # indices 1-3 hold no parameters in DREAM's files; identity keeps index 4/6 keys right
            def up(cin, cmid, cout):
                return _indexed({0: nn.Upsample(scale_factor=2, mode="nearest"), 1: nn.Identity(),
                                 2: nn.Identity(), 3: nn.Identity(),
                                 4: nn.Conv2d(cin, cmid, 3, padding=1), 5: nn.ReLU(inplace=True),
                                 6: nn.Conv2d(cmid, cout, 3, padding=1)})
            self.upsample_0_4 = up(512, 256, 256)
            self.upsample_0_3 = up(256, 128, 64)
            self.stride = 4
        else:
            def deconv(cin, cout):
                return nn.Sequential(nn.ConvTranspose2d(cin, cout, 3, 2, 1, output_padding=1),
                                     nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=1),
                                     nn.ReLU(inplace=True))
            self.deconv_0_4 = deconv(512, 256)
            self.deconv_0_3 = deconv(256, 128)
            self.deconv_0_2 = deconv(128, 64)
            self.deconv_0_1 = nn.Sequential(nn.ConvTranspose2d(64, 64, 3, 2, 1, output_padding=1),
                                            nn.ReLU(inplace=True))
            self.stride = 1
        self.heads_0 = _head(num_keypoints)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name, _, _ in _VGG_GROUPS:
            x = getattr(self, name)(x)
        if self.decoder == "q":
            x = self.upsample_0_3(self.upsample_0_4(x))
        else:
            x = self.deconv_0_1(self.deconv_0_2(self.deconv_0_3(self.deconv_0_4(x))))
        return self.heads_0(x)


class Bottleneck(nn.Module):
    """torchvision's ResNet bottleneck layout (stride on the 3x3 conv)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module = None):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + idt)


def _resnet_layer(cin: int, width: int, blocks: int, stride: int) -> nn.Sequential:
    cout = width * Bottleneck.expansion
    down = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout else None)
    layers = [Bottleneck(cin, width, stride, down)]
    layers += [Bottleneck(cout, width) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class DreamResNet(nn.Module):
    """ResNet-101 backbone + transposed-conv decoder. full=False: H (stride ~2 of 400 -> 208);
    full=True: F (one more deconv stage, 416)."""

    def __init__(self, num_keypoints: int, full: bool = False):
        super().__init__()
        self.full = bool(full)
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = _resnet_layer(64, 64, 3, 1)
        self.layer2 = _resnet_layer(256, 128, 4, 2)
        self.layer3 = _resnet_layer(512, 256, 23, 2)
        self.layer4 = _resnet_layer(1024, 512, 3, 2)
        ups: List[nn.Module] = []
        cin = 2048
        for _ in range(4):
            ups += [nn.ConvTranspose2d(cin, 256, 4, 2, 1), nn.BatchNorm2d(256),
                    nn.ReLU(inplace=True)]
            cin = 256
        if self.full:
            self.upsample = nn.Sequential(*ups)
            self.upsample2 = nn.Sequential(nn.ConvTranspose2d(256, 256, 4, 2, 1),
                                           nn.BatchNorm2d(256), nn.ReLU(inplace=True),
                                           nn.Conv2d(256, num_keypoints, 1))
        else:
            self.upsample = nn.Sequential(*ups, nn.Conv2d(256, num_keypoints, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.upsample(x)
        return self.upsample2(x) if self.full else x


def build_dream_network(arch: str, num_keypoints: int) -> nn.Module:
    """One of DREAM_ARCHS with DREAM's state_dict layout (randomly initialised)."""
    if int(num_keypoints) < 1:
        raise ConfigError(f"num_keypoints must be >= 1, got {num_keypoints}")
    n = int(num_keypoints)
    if arch == "vgg_q":
        net = DreamVGG(n, "q")
    elif arch == "vgg_f":
        net = DreamVGG(n, "f")
    elif arch == "resnet_h":
        net = DreamResNet(n, full=False)
    elif arch == "resnet_f":
        net = DreamResNet(n, full=True)
    else:
        raise ConfigError(f"unknown DREAM architecture {arch!r}; known: {list(DREAM_ARCHS)}")
    net.arch = arch
    return net


def dream_arch_from_config(architecture: dict) -> str:
    """DREAM YAML `architecture` mapping -> one of DREAM_ARCHS."""
    kind = architecture.get("type")
    if kind == "vgg":
        return "vgg_f" if architecture.get("deconv_decoder", False) else "vgg_q"
    if kind == "resnet":
        return "resnet_f" if architecture.get("full_decoder", False) else "resnet_h"
    raise ConfigError(f"DREAM architecture.type {kind!r} not supported (vgg or resnet); "
                      "DREAM's multi-stage/DOPE/skip/spatial-softmax variants are not released")


def dream_output_size(arch: str, input_size: Tuple[int, int]) -> Tuple[int, int]:
    """(W, H) of the belief maps for a (W, H) input (floor pooling / stride-2 conv rounding)."""
    def resnet_down(s):
        s = (s + 2 * 3 - 7) // 2 + 1          # conv1 7x7 s2 p3
        for _ in range(4):                    # maxpool 3x3 s2 p1, then layer2..4 3x3 s2 p1
            s = (s + 2 - 3) // 2 + 1
        return s

    out = []
    for s in input_size:
        if arch == "vgg_q":
            out.append((s // 16) * 4)
        elif arch == "vgg_f":
            out.append((s // 16) * 16)
        elif arch == "resnet_h":
            out.append(resnet_down(s) * 16)
        elif arch == "resnet_f":
            out.append(resnet_down(s) * 32)
        else:
            raise ConfigError(f"unknown DREAM architecture {arch!r}")
    return out[0], out[1]
