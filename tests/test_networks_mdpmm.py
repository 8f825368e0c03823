"""MDPMM: the frequency split of Eq. 4, the branches, and the non-decoupled ablation."""

import pytest
import torch

from scripts.networks.bimamba import MambaConfig
from scripts.networks.mdpmm import MDPMM, frequency_split

KW = {"mamba": MambaConfig(d_state=4, expand=1.0)}


pytestmark = pytest.mark.usefixtures("one_thread")


def _n(m):
    return sum(p.numel() for p in m.parameters())


def test_frequency_split_is_exact_and_separates_bands():
    torch.manual_seed(0)
    u = torch.randn(2, 3, 9, 7)  # odd sizes: ceil-mode pooling and exact-size upsampling
    low, high = frequency_split(u)
    assert low.shape == high.shape == u.shape
    assert torch.allclose(low + high, u, atol=1e-6)
    # a constant map is all low frequency
    c = torch.full((1, 2, 8, 8), 3.0)
    low, high = frequency_split(c)
    assert torch.allclose(low, c) and high.abs().max() < 1e-6
    # a pixel checkerboard (Nyquist) averages to zero over 2x2: all high frequency
    i, j = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    cb = ((-1.0) ** (i + j)).expand(1, 2, 8, 8)
    low, high = frequency_split(cb)
    assert low.abs().max() < 1e-6 and torch.allclose(high, cb)
    # a smooth ramp keeps most of its energy in the low band
    ramp = torch.linspace(0, 1, 32).expand(1, 1, 32, 32)
    low, high = frequency_split(ramp)
    assert high.square().sum() < 0.01 * low.square().sum()


@pytest.mark.parametrize("freq_decouple", [True, False])
def test_shapes_and_gradients(freq_decouple):
    torch.manual_seed(0)
    m = MDPMM(8, freq_decouple=freq_decouple, **KW)
    x = torch.randn(2, 8, 7, 5)
    out = m(x)
    assert out.shape == x.shape
    out.square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_branches_see_their_band():
    # the GDFN branch gets exactly the low band of LN(x) and the BiMamba branch exactly the high band
    torch.manual_seed(0)
    m = MDPMM(4, layernorm_type="BiasFree", **KW).eval()
    x = torch.randn(1, 4, 8, 8) + 2.0
    with torch.no_grad():
        _, (lo, hi) = m(x, return_bands=True)
        u = m.norm(x)
        low, high = frequency_split(u)
        assert torch.allclose(lo, m.gdfn(low), atol=1e-6)
        assert torch.allclose(hi, m.mamba(high), atol=1e-6)


def test_residual_with_zero_fusion_is_identity():
    torch.manual_seed(0)
    m = MDPMM(8, **KW)
    with torch.no_grad():
        m.fuse.weight.zero_()
        m.fuse.bias.zero_()
    x = torch.randn(1, 8, 6, 6)
    assert torch.equal(m(x), x)


def test_low_res_gdfn_option_has_the_same_parameters_and_shape():
    torch.manual_seed(0)
    a, b = MDPMM(8, **KW), MDPMM(8, low_res_gdfn=True, **KW)
    assert _n(a) == _n(b)
    assert b(torch.randn(1, 8, 9, 11)).shape == (1, 8, 9, 11)


def test_no_frequency_decoupling_removes_the_fusion_conv():
    full, plain = MDPMM(16, **KW), MDPMM(16, freq_decouple=False, **KW)
    assert not hasattr(plain, "fuse")
    assert _n(full) - _n(plain) == (2 * 16 * 16 + 16) - 2 * 16  # fusion conv out, second LayerNorm in


def test_fusion_equals_the_concatenated_formulation():
    """x + fuse(cat[lo, hi]) of the paper, computed without the concatenation."""
    torch.manual_seed(0)
    m = MDPMM(8, **KW).double()
    x = torch.randn(2, 8, 6, 5, dtype=torch.float64)
    out, (lo, hi) = m(x, return_bands=True)
    torch.testing.assert_close(out, x + m.fuse(torch.cat([lo, hi], dim=1)), rtol=1e-12, atol=1e-12)
