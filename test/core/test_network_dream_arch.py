"""DREAM architectures: state_dict keys, shapes and totals as in dream-compat.md §1."""
from __future__ import annotations

import pytest
import torch

from dream_ros.errors import ConfigError
from dream_ros.network.dream_arch import (build_dream_network, dream_arch_from_config,
                                          dream_output_size)

# §1.1 table, written out by hand: key (after `module.`) -> weight shape; every conv has a bias.
VGG_COMMON = {
    "layer_0_1_down.0": (64, 3, 3, 3), "layer_0_1_down.2": (64, 64, 3, 3),
    "layer_0_2_down.5": (128, 64, 3, 3), "layer_0_2_down.7": (128, 128, 3, 3),
    "layer_0_3_down.10": (256, 128, 3, 3), "layer_0_3_down.12": (256, 256, 3, 3),
    "layer_0_3_down.14": (256, 256, 3, 3), "layer_0_3_down.16": (256, 256, 3, 3),
    "layer_0_4_down.19": (512, 256, 3, 3), "layer_0_4_down.21": (512, 512, 3, 3),
    "layer_0_4_down.23": (512, 512, 3, 3), "layer_0_4_down.25": (512, 512, 3, 3),
    "layer_0_5_down.28": (512, 512, 3, 3), "layer_0_5_down.30": (512, 512, 3, 3),
    "layer_0_5_down.32": (512, 512, 3, 3), "layer_0_5_down.34": (512, 512, 3, 3),
    "heads_0.0": (64, 64, 3, 3), "heads_0.2": (32, 64, 3, 3),
}
VGG_Q = {"upsample_0_4.4": (256, 512, 3, 3), "upsample_0_4.6": (256, 256, 3, 3),
         "upsample_0_3.4": (128, 256, 3, 3), "upsample_0_3.6": (64, 128, 3, 3)}
VGG_F = {"deconv_0_4.0": (512, 256, 3, 3), "deconv_0_4.2": (256, 256, 3, 3),
         "deconv_0_3.0": (256, 128, 3, 3), "deconv_0_3.2": (128, 128, 3, 3),
         "deconv_0_2.0": (128, 64, 3, 3), "deconv_0_2.2": (64, 64, 3, 3),
         "deconv_0_1.0": (64, 64, 3, 3)}


def vgg_spec(decoder, k):
    layers = dict(VGG_COMMON, **(VGG_Q if decoder == "q" else VGG_F))
    layers["heads_0.4"] = (k, 32, 3, 3)
    spec = {}
    for name, shape in layers.items():
        spec[name + ".weight"] = shape
        transposed = name.startswith("deconv") and name.endswith(".0")   # weight is (in, out, k, k)
        spec[name + ".bias"] = (shape[1],) if transposed else (shape[0],)
    return spec


# totals for 7 keypoints; other K change only the last layer
TOTALS = {"vgg_q": (46, 22_220_615, 0), "vgg_f": (52, 22_442_055, 0),
          "resnet_h": (654, 54_039_367, 107_500), "resnet_f": (661, 55_088_711, 108_013)}


def last_layer_params(arch, k):
    return 32 * 9 * k + k if arch.startswith("vgg") else 256 * k + k


def counts(net):
    sd = net.state_dict()
    n_par = sum(p.numel() for p in net.parameters())
    n_buf = sum(b.numel() for b in net.buffers())
    return len(sd), n_par, n_buf


@pytest.mark.parametrize("k", [7, 8, 17])
@pytest.mark.parametrize("decoder", ["q", "f"])
def test_vgg_keys_and_shapes_exact(decoder, k):
    net = build_dream_network("vgg_" + decoder, k)
    got = {n: tuple(t.shape) for n, t in net.state_dict().items()}
    assert got == vgg_spec(decoder, k)


@pytest.mark.parametrize("k", [7, 8, 17])
@pytest.mark.parametrize("arch", list(TOTALS))
def test_totals(arch, k):
    entries, params7, bufs = TOTALS[arch]
    assert counts(build_dream_network(arch, k)) == (
        entries, params7 + last_layer_params(arch, k) - last_layer_params(arch, 7), bufs)


@pytest.mark.parametrize("k", [7, 8, 17])
@pytest.mark.parametrize("arch", ["resnet_h", "resnet_f"])
def test_resnet_keys_and_shapes(arch, k):
    sd = build_dream_network(arch, k).state_dict()
    shapes = {n: tuple(t.shape) for n, t in sd.items()}
    # torchvision layout: top-level backbone names, [3, 4, 23, 3] bottlenecks, downsample in block 0
    tops = {n.split(".")[0] for n in sd}
    assert tops == {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "upsample"} | (
        {"upsample2"} if arch == "resnet_f" else set())
    for layer, n_blocks in zip(["layer1", "layer2", "layer3", "layer4"], [3, 4, 23, 3]):
        blocks = {int(n.split(".")[1]) for n in sd if n.startswith(layer + ".")}
        assert blocks == set(range(n_blocks))
        assert {n for n in sd if n.startswith(layer) and "downsample" in n} == {
            f"{layer}.0.downsample.{i}.{p}" for i, p in
            [(0, "weight"), (1, "weight"), (1, "bias"), (1, "running_mean"), (1, "running_var"),
             (1, "num_batches_tracked")]}
    assert shapes["conv1.weight"] == (64, 3, 7, 7)
    assert shapes["layer3.22.conv3.weight"] == (1024, 256, 1, 1)
    assert shapes["layer4.0.downsample.0.weight"] == (2048, 1024, 1, 1)
    assert shapes["upsample.0.weight"] == (2048, 256, 4, 4)
    for i in (3, 6, 9):
        assert shapes[f"upsample.{i}.weight"] == (256, 256, 4, 4)
        assert shapes[f"upsample.{i}.bias"] == (256,)
    for i in (1, 4, 7, 10):
        assert {f"upsample.{i}.{p}" for p in ("weight", "bias", "running_mean", "running_var",
                                              "num_batches_tracked")} <= set(sd)
    if arch == "resnet_h":
        assert shapes["upsample.12.weight"] == (k, 256, 1, 1)
        assert not any(n.startswith("upsample2") for n in sd)
    else:
        assert "upsample.12.weight" not in sd
        assert shapes["upsample2.0.weight"] == (256, 256, 4, 4)
        assert shapes["upsample2.3.weight"] == (k, 256, 1, 1)
        assert shapes["upsample2.1.running_var"] == (256,)


@pytest.mark.parametrize("arch,in_size,out_size", [
    ("vgg_q", (64, 48), (16, 12)), ("vgg_f", (64, 48), (64, 48)),
    ("resnet_h", (64, 48), (32, 32)), ("resnet_f", (80, 48), (96, 64))])
def test_forward_output_size(arch, in_size, out_size):
    net = build_dream_network(arch, 7).eval()
    with torch.inference_mode():
        out = net(torch.zeros(1, 3, in_size[1], in_size[0]))
    assert tuple(out.shape) == (1, 7, out_size[1], out_size[0])
    assert dream_output_size(arch, in_size) == out_size


def test_documented_output_sizes():
    assert dream_output_size("vgg_q", (400, 400)) == (100, 100)
    assert dream_output_size("vgg_f", (400, 400)) == (400, 400)
    assert dream_output_size("resnet_h", (400, 400)) == (208, 208)
    assert dream_output_size("resnet_f", (400, 400)) == (416, 416)
    assert dream_output_size("vgg_q", (640, 480)) == (160, 120)
    assert dream_output_size("resnet_h", (640, 480)) == (320, 240)
    assert dream_output_size("resnet_f", (533, 400)) == (544, 416)


def test_arch_from_yaml_and_errors():
    assert dream_arch_from_config({"type": "vgg"}) == "vgg_q"
    assert dream_arch_from_config({"type": "vgg", "deconv_decoder": True}) == "vgg_f"
    assert dream_arch_from_config({"type": "resnet"}) == "resnet_h"
    assert dream_arch_from_config({"type": "resnet", "full_decoder": True}) == "resnet_f"
    with pytest.raises(ConfigError):
        dream_arch_from_config({"type": "dope"})
    with pytest.raises(ConfigError):
        build_dream_network("vgg_x", 7)
