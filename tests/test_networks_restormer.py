"""Restormer blocks: the layer norms' formulas, GDFN's parameter count and gating, Down/Upsample shapes."""

import pytest
import torch
import torch.nn.functional as F

from scripts.networks.restormer import GDFN, BiasFreeLayerNorm, Downsample, LayerNorm2d, Upsample, WithBiasLayerNorm

pytestmark = pytest.mark.usefixtures("one_thread")


def test_withbias_layernorm_equals_torch_layernorm():
    torch.manual_seed(0)
    x = torch.randn(2, 7, 5, 3) * 3 + 2
    ln = WithBiasLayerNorm(3)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-1, 1)
    ref = F.layer_norm(x, (3,), ln.weight, ln.bias, eps=1e-5)
    assert torch.allclose(ln(x), ref, atol=1e-5)


def test_biasfree_layernorm_keeps_the_mean():
    # BiasFree divides by the (centred) std but does not subtract the mean: a constant offset survives
    x = torch.tensor([[1.0, 3.0]])  # mean 2, var 1
    out = BiasFreeLayerNorm(2)(x)
    assert torch.allclose(out, x / (1.0 + 1e-5) ** 0.5, atol=1e-6)
    assert not torch.allclose(out, WithBiasLayerNorm(2)(x))


@pytest.mark.parametrize("kind", ["WithBias", "BiasFree"])
def test_layernorm2d_normalises_each_pixel_over_channels(kind):
    torch.manual_seed(0)
    x = torch.randn(2, 6, 4, 5) * 4 + 1
    out = LayerNorm2d(6, kind)(x)
    assert out.shape == x.shape
    var = out.var(dim=1, unbiased=False)
    assert torch.allclose(var, torch.ones_like(var), atol=1e-3)
    if kind == "WithBias":
        assert out.mean(dim=1).abs().max() < 1e-5
    # pixels are independent: changing one pixel changes only that pixel's output
    x2 = x.clone()
    x2[:, :, 1, 2] += 5
    diff = (LayerNorm2d(6, kind)(x2) - out).abs().sum(dim=1)
    assert diff[:, 1, 2].min() > 0 and diff.sum() == diff[:, 1, 2].sum()


def test_layernorm2d_rejects_unknown_type():
    with pytest.raises(ValueError):
        LayerNorm2d(4, "Batch")


def test_gdfn_parameter_count_and_shape():
    g = GDFN(48, 2.66, bias=False)
    h = int(48 * 2.66)
    assert h == 127
    assert sum(p.numel() for p in g.parameters()) == 3 * 48 * h + 18 * h == 20574
    x = torch.randn(1, 48, 9, 7)
    assert g(x).shape == x.shape


def test_gdfn_is_gated():
    # with the gate half of project_in zeroed, GELU(x1) * x2 is zero and so is the output
    torch.manual_seed(0)
    g = GDFN(8, 2.0)
    with torch.no_grad():
        g.project_in.weight[g.hidden_features :].zero_()
    assert g(torch.randn(2, 8, 5, 5)).abs().max() == 0


def test_down_and_upsample_shapes_and_params():
    x = torch.randn(2, 16, 8, 6)
    d, u = Downsample(16), Upsample(32)
    assert d(x).shape == (2, 32, 4, 3)
    assert u(d(x)).shape == (2, 16, 8, 6)
    assert sum(p.numel() for p in d.parameters()) == 16 * 8 * 9  # Conv3x3 C -> C/2, no bias
    assert sum(p.numel() for p in u.parameters()) == 32 * 64 * 9  # Conv3x3 C -> 2C, no bias
    with pytest.raises(ValueError):
        Downsample(15)


@pytest.mark.parametrize("bias", [False, True])
def test_gdfn_equals_the_chunked_formulation(bias):
    """The split computation (two half convs) is Restormer's ``dwconv(project_in(x)).chunk(2)`` exactly."""
    torch.manual_seed(0)
    g = GDFN(8, 2.66, bias=bias).double()
    x = torch.randn(2, 8, 6, 5, dtype=torch.float64)
    x1, x2 = g.dwconv(g.project_in(x)).chunk(2, dim=1)
    ref = g.project_out(F.gelu(x1) * x2)
    torch.testing.assert_close(g(x), ref, rtol=1e-12, atol=1e-12)
    xc = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(g(xc), ref, rtol=1e-12, atol=1e-12)
