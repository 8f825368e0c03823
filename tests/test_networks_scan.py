"""Selective scan: the chunked pure-PyTorch path against the sequential reference, stability, dispatch."""

from __future__ import annotations

import importlib
import math

import pytest
import torch

from scripts.networks.selective_scan import (
    selective_scan,
    selective_scan_chunked,
    selective_scan_sequential,
)

# the module itself (the package may re-export the function under the same name)
ss = importlib.import_module("scripts.networks.selective_scan")


def _inputs(b=2, e=6, n=5, length=37, dtype=torch.float64, seed=0, delta_scale=0.5):
    g = torch.Generator().manual_seed(seed)
    kw = {"dtype": dtype, "generator": g}
    return {
        "u": torch.randn(b, e, length, **kw),
        "delta": torch.randn(b, e, length, **kw) * delta_scale,
        "A": -(torch.rand(e, n, **kw) * 2 + 0.1),
        "B": torch.randn(b, n, length, **kw),
        "C": torch.randn(b, n, length, **kw),
        "D": torch.randn(e, **kw),
        "z": torch.randn(b, e, length, **kw),
        "delta_bias": torch.randn(e, **kw) * 0.1,
    }


def _run(fn, inp, seed=1, **kw):
    """Outputs, last state and gradients of a random linear functional of both w.r.t. every input."""
    leaves = {k: v.clone().requires_grad_(True) for k, v in inp.items()}
    out, last = fn(**leaves, delta_softplus=True, return_last_state=True, **kw)
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out.shape, dtype=out.dtype, generator=g)
    wl = torch.randn(last.shape, dtype=last.dtype, generator=g)
    grads = torch.autograd.grad((out * w).sum() + (last * wl).sum(), list(leaves.values()))
    return out, last, dict(zip(leaves, grads))


def _assert_close(ref, got, tol=1e-5):
    out_r, last_r, g_r = ref
    out_g, last_g, g_g = got
    torch.testing.assert_close(out_g, out_r, rtol=tol, atol=tol)
    torch.testing.assert_close(last_g, last_r, rtol=tol, atol=tol)
    for k in g_r:
        torch.testing.assert_close(g_g[k], g_r[k], rtol=tol, atol=tol, msg=f"gradient w.r.t. {k}")


@pytest.mark.parametrize(
    "length,chunk_size,group_chunks",
    [(1, 32, 16), (7, 4, 2), (32, 8, 2), (33, 8, 2), (100, 7, 3), (257, 32, 16), (300, 16, 4)],
)
def test_chunked_matches_sequential_float64(length, chunk_size, group_chunks):
    inp = _inputs(length=length)
    ref = _run(selective_scan_sequential, inp)
    got = _run(selective_scan_chunked, inp, chunk_size=chunk_size, group_chunks=group_chunks)
    _assert_close(ref, got)


def test_chunked_default_arguments_and_optional_inputs():
    """No D, z, bias, softplus: still the reference; defaults of chunk/group."""
    inp = _inputs(length=50)
    args = {k: inp[k].clone().requires_grad_(True) for k in ("u", "delta", "A", "B", "C")}
    args["delta"] = args["delta"].detach().abs().requires_grad_(True)
    ref = selective_scan_sequential(**args)
    got = selective_scan_chunked(**args)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    gr = torch.autograd.grad(ref.sum(), list(args.values()))
    gg = torch.autograd.grad(got.sum(), list(args.values()))
    for a, b in zip(gr, gg):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


def test_sequential_against_closed_form():
    """E = N = 1, constant delta, A, B, C: h_t = sum_s a^(t-s) d u_s, a known convolution."""
    length, d, a_ = 20, 0.3, -0.7
    u = torch.randn(1, 1, length, dtype=torch.float64)
    ones = torch.ones(1, 1, length, dtype=torch.float64)
    A = torch.full((1, 1), a_, dtype=torch.float64)
    y = selective_scan_sequential(u, ones * d, A, ones, ones * 2.0)
    decay = math.exp(d * a_)
    expect = [2.0 * sum(decay ** (t - s) * d * u[0, 0, s].item() for s in range(t + 1)) for t in range(length)]
    torch.testing.assert_close(y[0, 0], torch.tensor(expect, dtype=torch.float64))
    torch.testing.assert_close(selective_scan_chunked(u, ones * d, A, ones, ones * 2.0, chunk_size=3), y)


def test_float32_close_to_float64_reference():
    inp = _inputs(b=1, e=4, n=3, length=500)
    ref = selective_scan_sequential(**inp, delta_softplus=True)
    got = selective_scan_chunked(**{k: v.float() for k, v in inp.items()}, delta_softplus=True)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-4)


def test_half_inputs_are_scanned_in_float32_and_returned_in_input_dtype():
    inp = {k: v.to(torch.bfloat16) for k, v in _inputs(b=1, e=3, n=2, length=40).items()}
    out = selective_scan_chunked(**inp, delta_softplus=True)
    assert out.dtype == torch.bfloat16
    ref = selective_scan_sequential(**{k: v.double() for k, v in inp.items()}, delta_softplus=True)
    torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=2e-2)


def test_stable_for_large_delta_times_a():
    """delta * A down to -1e4 per step (exp underflows to 0): no NaN/Inf, and the state resets to the last input."""
    inp = _inputs(b=1, e=4, n=3, length=200, dtype=torch.float32, delta_scale=1.0)
    delta = torch.full_like(inp["u"], 50.0)
    A = torch.full_like(inp["A"], -200.0)
    leaves = [t.clone().requires_grad_(True) for t in (inp["u"], delta, A, inp["B"], inp["C"])]
    out = selective_scan_chunked(*leaves, chunk_size=16, group_chunks=2)
    assert torch.isfinite(out).all()
    # decay exp(-1e4) == 0: h_t = delta u_t B_t exactly, y_t = delta u_t (B_t . C_t)
    u, d, _, b, c = (t.detach() for t in leaves)
    torch.testing.assert_close(out.detach(), d * u * (b * c).sum(1, keepdim=True), rtol=1e-5, atol=1e-4)
    grads = torch.autograd.grad(out.square().sum(), leaves)
    assert all(torch.isfinite(g).all() for g in grads)
    # mixed: tiny and huge decays in the same chunk still agree with the reference
    inp64 = _inputs(b=1, e=4, n=3, length=100, delta_scale=1.0)
    inp64["delta"] = torch.where(torch.rand_like(inp64["delta"]) < 0.3, 30.0, 0.01) * torch.ones_like(inp64["delta"])
    inp64["A"] = inp64["A"] * 10
    for k in ("delta_bias",):
        inp64.pop(k)
    ref = _run(lambda **kw: selective_scan_sequential(**kw), inp64)
    got = _run(lambda **kw: selective_scan_chunked(**kw, chunk_size=8, group_chunks=2), inp64)
    _assert_close(ref, got)


def test_shape_errors():
    inp = _inputs(length=10)
    with pytest.raises(ValueError, match="B must be"):
        selective_scan_chunked(inp["u"], inp["delta"], inp["A"], inp["B"][:, :, :5], inp["C"])
    with pytest.raises(ValueError, match="A must be"):
        selective_scan_chunked(inp["u"], inp["delta"], inp["A"][:3], inp["B"], inp["C"])


def test_dispatch_on_cpu(monkeypatch):
    inp = _inputs(length=20)
    ref = selective_scan_chunked(**inp, delta_softplus=True)
    # auto on CPU tensors -> the torch path (whether or not mamba_ssm imports)
    torch.testing.assert_close(selective_scan(**inp, delta_softplus=True), ref)
    torch.testing.assert_close(selective_scan(**inp, delta_softplus=True, backend="torch", chunk_size=3), ref)
    with pytest.raises(ValueError, match="backend"):
        selective_scan(**inp, backend="cuda")
    # forcing mamba_ssm when it cannot be imported: a clear error
    monkeypatch.setattr(ss, "_MAMBA_IMPORT_TRIED", True)
    monkeypatch.setattr(ss, "_MAMBA_FN", None)
    monkeypatch.setattr(ss, "_MAMBA_IMPORT_ERROR", "ModuleNotFoundError: No module named 'mamba_ssm'")
    assert not ss.mamba_ssm_available()
    with pytest.raises(RuntimeError, match="mamba_ssm.*cannot be imported"):
        selective_scan(**inp, backend="mamba_ssm")
    # importable but CPU tensors: also a clear error; auto still falls back to torch
    monkeypatch.setattr(ss, "_MAMBA_FN", lambda *a, **k: pytest.fail("CUDA kernel called on CPU tensors"))
    with pytest.raises(RuntimeError, match="CUDA tensors"):
        selective_scan(**inp, backend="mamba_ssm")
    torch.testing.assert_close(selective_scan(**inp, delta_softplus=True), ref)


def test_real_import_guard_does_not_raise():
    # mamba_ssm is not installed on CPU machines; the probe must answer False rather than raise
    assert isinstance(ss.mamba_ssm_available(), bool)


@pytest.mark.slow
def test_chunked_long_sequence_float64():
    inp = _inputs(b=1, e=4, n=4, length=2000, seed=3)
    _assert_close(_run(selective_scan_sequential, inp), _run(selective_scan_chunked, inp))


def test_num_threads_is_restored_and_does_not_change_results():
    inp = _inputs(length=40)
    before = torch.get_num_threads()
    ref = _run(selective_scan_chunked, inp, num_threads=None)
    got = _run(selective_scan_chunked, inp, num_threads=1)
    assert torch.get_num_threads() == before
    _assert_close(ref, got, tol=1e-12)
