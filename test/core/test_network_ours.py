"""Our CPU architectures: output shape/stride, linear output, gradients reach every parameter."""
from __future__ import annotations

import pytest
import torch

from dream_ros.errors import ConfigError
from dream_ros.network.ours import NETWORK_INFO, available_archs, build_network, check_input_size


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
