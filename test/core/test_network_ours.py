"""Our CPU architectures: output shape/stride, linear output, gradients reach every parameter."""
from __future__ import annotations

import pytest
import torch

from dream_ros.errors import ConfigError
from dream_ros.network.ours import (NETWORK_INFO, available_archs, build_network, check_input_size,
                                   grow_state_dict)


@pytest.mark.parametrize("arch", available_archs())
def test_shapes_and_gradient_flow(arch):
    torch.manual_seed(0)
    net = build_network(arch, 7)
    assert NETWORK_INFO[arch]["stride"] == 4 and NETWORK_INFO[arch]["default_input"] == (320, 240)
    x = torch.randn(2, 3, 64, 96)
    out = net(x)
    assert out.shape == (2, 7, 16, 24) and out.dtype == torch.float32
    out.pow(2).mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing
    # zero-initialised residual BN weights get gradient too (training can leave identity init)
    assert any(p.grad.abs().sum() > 0 for n, p in net.named_parameters() if "bn2" in n)


def test_default_input_and_channels_last_agree():
    net = build_network("dream_lite_s4", 3).eval()
    x = torch.randn(1, 3, 240, 320)
    with torch.inference_mode():
        a = net(x)
        xc = x.contiguous(memory_format=torch.channels_last)
        b = net.to(memory_format=torch.channels_last)(xc)
    assert a.shape == (1, 3, 60, 80)
    torch.testing.assert_close(a, b.contiguous(), rtol=1e-4, atol=1e-5)


def test_output_is_linear():
    # no sigmoid or clamp: the last layer's bias moves the output anywhere, below 0 and above 1
    net = build_network("dream_tiny_s4", 2).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for bias in (-2.0, 5.0):
            net.head[-1].bias.fill_(bias)
            assert torch.allclose(net(x), torch.full((1, 2, 16, 16), bias), atol=0.5)


def test_bad_arguments():
    with pytest.raises(ConfigError):
        build_network("nope", 7)
    with pytest.raises(ConfigError):
        build_network("dream_lite_s4", 0)
    with pytest.raises(ConfigError):
        check_input_size(322, 240)
    check_input_size(320, 240)


def _randomised(net):
    """Every weight and BatchNorm statistic random (a trained net has no zero-init left)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if t.is_floating_point():
                r = torch.rand(t.shape, generator=g)
                t.copy_(0.5 + r if name.endswith(("running_var", "bn2.weight")) else (r - 0.5) * 0.4)
    return net


@pytest.mark.parametrize("small, big", [("dream_tiny_deeper_s4", "dream_wide_s4"),
                                        ("dream_tiny_s4", "dream_wide_s4")])
def test_grown_net_computes_the_same_maps(small, big):
    src = _randomised(build_network(small, 7))
    net = build_network(big, 7)
    used = grow_state_dict(src.state_dict(), net)
    assert used == len(src.state_dict())           # every tensor of the small net found a place
    assert sum(p.numel() for p in net.parameters()) > 1.5 * sum(p.numel() for p in src.parameters())
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), src.eval()(x))
        # in training mode too: BatchNorm's batch statistics are per channel
        torch.testing.assert_close(net.train()(x), src.train()(x))
    # the new channels are not dead: the zeroed weights that would carry them into the old
    # channels get gradient at once, so training starts to use them
    net.zero_grad()
    net(x).pow(2).mean().backward()
    w = net.stages[3][0].conv2.weight
    assert torch.count_nonzero(w.detach()[:192, 192:]) == 0
    assert w.grad[:192, 192:].abs().sum() > 0


def test_growth_skips_tensors_that_do_not_fit():
    src = build_network("dream_wide_s4", 7)
    net = build_network("dream_tiny_deeper_s4", 7)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    used = grow_state_dict(src.state_dict(), net)
    after = net.state_dict()
    shrunk = [k for k in before if src.state_dict()[k].shape != before[k].shape]
    assert shrunk and used == len(before) - len(shrunk)
    assert all(torch.equal(before[k], after[k]) for k in shrunk)
