"""BiMamba2D: shapes, parameter budget, gradients, bidirectionality, agreement with the readable path."""

from __future__ import annotations

import pytest
import torch

from scripts.networks.bimamba import BiMamba2D, MambaConfig


@pytest.mark.parametrize("shape", [(2, 8, 5, 7), (1, 8, 1, 1), (1, 8, 1, 13), (1, 8, 9, 1), (3, 8, 11, 6)])
def test_shapes_any_hw(shape):
    torch.manual_seed(0)
    m = BiMamba2D(8, MambaConfig(d_state=4, chunk_size=4))
    y = m(torch.randn(shape))
    assert y.shape == shape and torch.isfinite(y).all()


@pytest.mark.parametrize("dim,expected_m", [(48, 0.026), (96, 0.081), (192, 0.282), (384, 1.043)])
def test_parameter_count_matches_architecture_budget(dim, expected_m):
    m = BiMamba2D(dim)
    n = sum(p.numel() for p in m.parameters())
    assert abs(n / 1e6 - expected_m) < 0.0015, n
    assert m.dt_rank == -(-dim // 16) and m.d_inner == 2 * dim


def test_mamba_init():
    m = BiMamba2D(32, MambaConfig(d_state=8))
    for br in (m.fwd, m.bwd):
        dt = torch.nn.functional.softplus(br.dt_proj.bias)
        assert dt.min() >= 1e-3 - 1e-7 and dt.max() <= 0.1 + 1e-6
        torch.testing.assert_close(-torch.exp(br.A_log), -torch.arange(1.0, 9.0).expand(64, 8))
        torch.testing.assert_close(br.D, torch.ones(64))
    # the two directions have their own parameters (not shared)
    assert m.fwd.conv1d.weight.data_ptr() != m.bwd.conv1d.weight.data_ptr()
    assert not torch.equal(m.fwd.dt_proj.bias, m.bwd.dt_proj.bias)


def test_fast_path_equals_reference_path_float64():
    torch.manual_seed(0)
    m = BiMamba2D(8, MambaConfig(d_state=4, chunk_size=4)).double()
    x = torch.randn(2, 8, 5, 7, dtype=torch.float64, requires_grad=True)
    y, y_ref = m(x), m.forward_reference(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    g = torch.autograd.grad(y.square().sum(), [x, *m.parameters()])
    g_ref = torch.autograd.grad(y_ref.square().sum(), [x, *m.parameters()])
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    m = BiMamba2D(8, MambaConfig(d_state=4))
    m(torch.randn(2, 8, 6, 5)).square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_bidirectional_first_token_sees_last_token():
    """Row-major scan both ways: output at (0, 0) depends on input at (H-1, W-1) and vice versa."""
    torch.manual_seed(0)
    m = BiMamba2D(8, MambaConfig(d_state=4)).double()
    x = torch.randn(1, 8, 4, 5, dtype=torch.float64, requires_grad=True)
    y = m(x)
    (g_first,) = torch.autograd.grad(y[0, :, 0, 0].sum(), x, retain_graph=True)
    (g_last,) = torch.autograd.grad(y[0, :, -1, -1].sum(), x)
    assert g_first[0, :, -1, -1].abs().sum() > 1e-8
    assert g_last[0, :, 0, 0].abs().sum() > 1e-8
    # a forward-only (causal) branch cannot do that: zero the backward branch's input and the dependence vanishes
    with torch.no_grad():
        m.bwd.x_proj.weight.zero_()
        m.bwd.D.zero_()
        m.bwd.conv1d.weight.zero_()
        m.bwd.conv1d.bias.zero_()
    (g_first,) = torch.autograd.grad(m(x)[0, :, 0, 0].sum(), x)
    assert g_first[0, :, -1, -1].abs().max() < 1e-12


def test_row_major_flattening():
    """The forward branch is causal in row-major order: token (1, 0) does not influence token (0, W-1) through it."""
    torch.manual_seed(0)
    m = BiMamba2D(8, MambaConfig(d_state=4)).double()
    with torch.no_grad():  # keep only the forward branch
        for p in m.bwd.parameters():
            p.zero_()
    x = torch.randn(1, 8, 3, 4, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(m(x)[0, :, 0, -1].sum(), x)
    assert g[0, :, 1:].abs().max() < 1e-12  # later rows: no influence
    assert g[0, :, 0, :].abs().sum(0).min() > 0  # every earlier token of the first row: influence


def test_deterministic():
    torch.manual_seed(0)
    m = BiMamba2D(8, MambaConfig(d_state=4))
    x = torch.randn(2, 8, 7, 9)
    y1, y2 = m(x), m(x)
    assert torch.equal(y1, y2)
    torch.manual_seed(0)
    assert torch.equal(BiMamba2D(8, MambaConfig(d_state=4))(x), y1)


def test_backend_argument():
    x = torch.randn(1, 8, 3, 3)
    assert BiMamba2D(8, MambaConfig(backend="torch"))(x).shape == x.shape
    with pytest.raises(ValueError):
        BiMamba2D(8, MambaConfig(backend="cuda"))
    with pytest.raises(RuntimeError, match="mamba_ssm"):
        BiMamba2D(8, MambaConfig(backend="mamba_ssm"))(x)  # CPU tensors (and normally no mamba_ssm): a clear error
