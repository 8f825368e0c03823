"""AMGDM: the gradient-step structure, the prior cross-attention and the no-prior fallback."""

import pytest
import torch

from scripts.networks.amgdm import AMGDM, PriorCrossAttention
from scripts.networks.bimamba import MambaConfig

KW = {"mamba": MambaConfig(d_state=4, expand=1.0)}


pytestmark = pytest.mark.usefixtures("one_thread")


def _inputs(b=2, c=8, h=6, w=5, t=3, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, generator=g), torch.randn(b, c, h, w, generator=g), torch.randn(b, t, d, generator=g)


def test_shapes_and_gradients_reach_every_parameter():
    torch.manual_seed(0)
    m = AMGDM(8, prior_dim=12, num_heads=2, **KW)
    x, y, p = _inputs()
    x.requires_grad_(True)
    p.requires_grad_(True)
    out = m(x, y, p)
    assert out.shape == x.shape
    out.square().mean().backward()
    for name, q in m.named_parameters():
        assert q.grad is not None and q.grad.abs().sum() > 0, name
    assert p.grad.abs().sum() > 0  # the prior tokens steer the update


def test_zero_step_size_is_the_identity_and_the_update_is_linear_in_rho():
    torch.manual_seed(0)
    m = AMGDM(8, prior_dim=12, **KW)
    x, y, p = _inputs()
    with torch.no_grad():
        m.step_size.fill_(0.0)
        assert torch.equal(m(x, y, p), x)
        m.step_size.fill_(1.0)
        d1 = m(x, y, p) - x
        m.step_size.fill_(2.5)
        d2 = m(x, y, p) - x
    assert d1.abs().max() > 0
    assert torch.allclose(d2, 2.5 * d1, atol=1e-5)


def test_update_depends_on_the_residual_phi_x_minus_y():
    # shifting y by a constant shifts r = Phi x - y; the step must react (it is a data-fidelity step)
    torch.manual_seed(0)
    m = AMGDM(8, prior_dim=12, **KW).eval()
    x, y, p = _inputs()
    with torch.no_grad():
        a, b = m(x, y, p), m(x, y + torch.randn_like(y), p)
    assert (a - b).abs().max() > 1e-3


def test_cross_attention_over_identical_tokens_ignores_the_queries():
    # softmax weights sum to 1 over the tokens: if all tokens are equal, every pixel receives the same value v
    torch.manual_seed(0)
    att = PriorCrossAttention(8, 12, num_heads=2)
    x = torch.randn(2, 8, 5, 7)
    tok = torch.randn(2, 1, 12).expand(2, 4, 12)
    out, attn = att(x, tok, return_attention=True)
    assert attn.shape == (2, 2, 4, 5, 7)
    assert torch.allclose(attn.sum(dim=2), torch.ones(2, 2, 5, 7), atol=1e-6)
    flat = out.flatten(2)
    assert torch.allclose(flat, flat[..., :1].expand_as(flat), atol=1e-5)
    # distinct tokens: the output varies over pixels
    out2 = att(x, torch.randn(2, 4, 12)).flatten(2)
    assert (out2 - out2[..., :1]).abs().max() > 1e-4


def test_prior_tokens_change_the_output():
    torch.manual_seed(0)
    m = AMGDM(8, prior_dim=12, **KW).eval()
    x, y, p = _inputs()
    with torch.no_grad():
        assert (m(x, y, p) - m(x, y, torch.randn_like(p))).abs().max() > 1e-4
    with pytest.raises(ValueError, match="tokens"):
        m(x, y)


def test_without_prior_uses_self_tokens_and_has_fewer_parameters():
    torch.manual_seed(0)
    with_prior = AMGDM(8, prior_dim=512, **KW)
    without = AMGDM(8, prior_dim=None, **KW)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(without) == n(with_prior) - 2 * 512 * 8  # the two Linear(512 -> C) prior projections are gone
    x, y, _ = _inputs()
    out = without(x, y)
    assert out.shape == x.shape
    assert without.self_tokens(x).shape == (2, 4, 8)
    out.mean().backward()
    assert all(q.grad is not None for q in without.parameters())


def test_shape_mismatch_is_rejected():
    m = AMGDM(8, prior_dim=None, **KW)
    with pytest.raises(ValueError):
        m(torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 5))
