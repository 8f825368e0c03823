"""Fused numba scan and conv1d: exactness against the sequential reference, float32 accuracy, dispatch, fallback."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scripts.networks import _numba_kernels as kernels
from scripts.networks import selective_scan_numba as sn
from scripts.networks.selective_scan import (
    canonical_backend,
    resolve_backend,
    selective_scan,
    selective_scan_chunked,
    selective_scan_sequential,
)

pytestmark = pytest.mark.skipif(not sn.numba_available(), reason="numba is not installed")

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def _inputs(b=2, e=3, n=5, length=37, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    kw = {"dtype": dtype, "generator": g}
    return {
        "u": torch.randn(b, e, length, **kw),
        "delta": torch.randn(b, e, length, **kw) * 0.5,
        "A": -(torch.rand(e, n, **kw) * 2 + 0.1),
        "B": torch.randn(b, n, length, **kw),
        "C": torch.randn(b, n, length, **kw),
        "D": torch.randn(e, **kw),
        "z": torch.randn(b, e, length, **kw),
        "delta_bias": torch.randn(e, **kw) * 0.3,
    }


def _flip(t):
    return t.flip(-1) if t is not None and t.dim() == 3 else t


def _outputs_and_grads(fn, inp, reverse=False, **kw):
    """Output and the gradients of a fixed random functional of it w.r.t. every input."""
    leaves = {k: v.clone().requires_grad_(True) for k, v in inp.items()}
    if reverse:  # the reference scans forwards: flip the sequence inputs and the output
        out = _flip(fn(**{k: _flip(v) for k, v in leaves.items()}, delta_softplus=True, **kw))
    else:
        out = fn(**leaves, delta_softplus=True, **kw)
    w = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad((out * w).sum(), list(leaves.values()))
    return out, dict(zip(leaves, grads))


@pytest.mark.parametrize("length", [1, 7, 300, 4097])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("num_threads", [1, 4])
def test_float64_matches_sequential_reference(length, reverse, num_threads):
    """Outputs and every gradient (u, delta, A, B, C, D, z, bias) to 1e-10, both directions, odd lengths.

    num_threads=4 with B=2 splits each batch item's channels into two groups (the partial dB/dC path)."""
    inp = _inputs(length=length)
    out_r, g_r = _outputs_and_grads(selective_scan_sequential, inp, reverse=reverse)
    out_n, g_n = _outputs_and_grads(sn.selective_scan_numba, inp, num_threads=num_threads, reverse=reverse)
    torch.testing.assert_close(out_n, out_r, rtol=1e-10, atol=1e-10)
    assert set(g_n) == set(NAMES)
    for k in NAMES:
        torch.testing.assert_close(g_n[k], g_r[k], rtol=1e-10, atol=1e-10, msg=f"gradient w.r.t. {k}")


def test_optional_inputs_and_last_state():
    """No D, z, bias or softplus: still the reference; the last state and the gradients through it (both directions)
    equal the reference's."""
    inp = _inputs(length=50)
    args = {k: inp[k] for k in ("u", "A", "B", "C")}
    args["delta"] = inp["delta"].abs()
    ref, last_ref = selective_scan_sequential(**args, return_last_state=True)
    got, last = sn.selective_scan_numba(**args, return_last_state=True)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(last, last_ref, rtol=1e-12, atol=1e-12)
    w = torch.randn(last.shape, dtype=last.dtype, generator=torch.Generator().manual_seed(2))
    for reverse in (False, True):
        leaves = {k: v.clone().requires_grad_(True) for k, v in args.items()}
        seq = {k: (_flip(v) if reverse else v) for k, v in leaves.items()}
        out_r, last_r = selective_scan_sequential(**seq, return_last_state=True)
        out_n, last_n = sn.selective_scan_numba(**leaves, return_last_state=True, reverse=reverse)
        torch.testing.assert_close(last_n, last_r, rtol=1e-12, atol=1e-12)
        g_r = torch.autograd.grad((last_r * w).sum() + out_r.sum(), list(leaves.values()))
        g_n = torch.autograd.grad((last_n * w).sum() + out_n.sum(), list(leaves.values()))
        for k, a, b in zip(leaves, g_n, g_r):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=f"gradient w.r.t. {k}")


def test_float32_within_1e5_of_chunked_scan():
    inp = _inputs(b=2, e=8, n=8, length=1000, dtype=torch.float32)
    for reverse in (False, True):
        out_n, g_n = _outputs_and_grads(partial(selective_scan, backend="numba", reverse=reverse), inp)
        out_c, g_c = _outputs_and_grads(partial(selective_scan, backend="chunked", reverse=reverse), inp)
        assert out_n.dtype == torch.float32
        torch.testing.assert_close(out_n, out_c, rtol=1e-5, atol=1e-5)
        for k in NAMES:  # gradients sum over L and channels: relative agreement
            torch.testing.assert_close(g_n[k], g_c[k], rtol=1e-4, atol=1e-4, msg=f"gradient w.r.t. {k}")


def test_float32_exp_polynomial_is_accurate():
    """The vectorisable float32 exp: within 2 ulp of exp for x in [-87.3, 0], exactly 0 below (no denormals)."""
    import numba

    @numba.njit
    def apply(x, out):
        for i in range(x.size):
            out[i] = kernels._exp_nonpos(x[i])

    x = np.concatenate([np.linspace(-87.3, 0.0, 200_001), -(10.0 ** np.linspace(-8, 0, 1001))]).astype(np.float32)
    out = np.empty_like(x)
    apply(x, out)
    ref = np.exp(x.astype(np.float64))
    ulp = np.spacing(ref.astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(out - ref) / ulp) <= 2.0
    below = np.array([-87.4, -100.0, -1e4, -np.inf], dtype=np.float32)
    out_b = np.empty_like(below)
    apply(below, out_b)
    assert np.all(out_b == 0)


def test_half_inputs_are_scanned_in_float32():
    inp = {k: v.to(torch.bfloat16) for k, v in _inputs(b=1, e=3, n=2, length=40).items()}
    out = sn.selective_scan_numba(**inp, delta_softplus=True)
    assert out.dtype == torch.bfloat16
    ref = selective_scan_sequential(**{k: v.double() for k, v in inp.items()}, delta_softplus=True)
    torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=2e-2)


def test_stable_for_huge_decays_and_nan_propagates():
    inp = _inputs(b=1, e=4, n=3, length=200, dtype=torch.float32)
    d = torch.full_like(inp["u"], 50.0)
    A = torch.full_like(inp["A"], -200.0)
    out = sn.selective_scan_numba(inp["u"], d, A, inp["B"], inp["C"])
    # exp(-1e4) == 0: the state is the last input, y_t = delta u_t (B_t . C_t)
    expect = d * inp["u"] * (inp["B"] * inp["C"]).sum(1, keepdim=True)
    torch.testing.assert_close(out, expect, rtol=1e-5, atol=1e-4)
    u = inp["u"].clone()
    u[0, 1, 10] = float("nan")
    out = sn.selective_scan_numba(u, inp["delta"].abs(), inp["A"], inp["B"], inp["C"])
    assert torch.isnan(out[0, 1, 10:]).all() and torch.isfinite(out[0, [0, 2, 3]]).all()


def test_non_contiguous_inputs():
    inp = _inputs(length=33)
    ref = selective_scan_sequential(**inp, delta_softplus=True)
    strided = {k: (v.transpose(1, 2).contiguous().transpose(1, 2) if v.dim() == 3 else v) for k, v in inp.items()}
    assert not strided["u"].is_contiguous()
    torch.testing.assert_close(sn.selective_scan_numba(**strided, delta_softplus=True), ref, rtol=1e-12, atol=1e-12)


def test_concurrent_calls_from_threads_are_correct():
    """A MONAI Label server runs inferences in threads; the parallel kernels are entered one at a time."""
    inp = _inputs(b=2, e=4, n=4, length=500)
    ref = sn.selective_scan_numba(**inp, delta_softplus=True, num_threads=2)
    results, errors = [], []

    def work():
        try:
            results.append(sn.selective_scan_numba(**inp, delta_softplus=True, num_threads=2))
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 4
    for r in results:
        torch.testing.assert_close(r, ref, rtol=0, atol=0)


@pytest.mark.parametrize("reverse", [False, True])
def test_conv1d_silu_matches_torch(reverse):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 37, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, generator=g, requires_grad=True)
    got = sn.causal_conv1d_silu_numba(x, w, b, reverse=reverse)
    xs = x.flip(-1) if reverse else x
    ref = F.silu(F.conv1d(xs, w[:, None], b, padding=3, groups=5)[..., :37])
    ref = ref.flip(-1) if reverse else ref
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    gy = torch.randn_like(got)
    for a, r in zip(torch.autograd.grad(got, [x, w, b], gy), torch.autograd.grad(ref, [x, w, b], gy)):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)


def test_dispatch_names_and_reverse_for_every_cpu_backend():
    inp = _inputs(length=20)
    ref = _flip(selective_scan_sequential(**{k: _flip(v) for k, v in inp.items()}, delta_softplus=True))
    for backend in ("auto", "numba", "chunked", "reference", "torch"):
        got = selective_scan(**inp, delta_softplus=True, backend=backend, reverse=True)
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10, msg=backend)
    assert resolve_backend("auto", "cpu") == "numba"
    assert canonical_backend("torch") == "chunked"
    with pytest.raises(ValueError, match="scan backend must be one of"):
        canonical_backend("cuda")
    with pytest.raises(RuntimeError, match="CPU tensors"):
        resolve_backend("numba", "cuda")


def test_without_numba_the_chunked_scan_serves(tmp_path):
    """numba not importable (simulated in a fresh interpreter): 'auto' falls back to the chunked scan, the network
    still trains, and asking for 'numba' explicitly says what is missing."""
    code = textwrap.dedent(
        """
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "numba" or name.startswith("numba."):
                    raise ModuleNotFoundError("No module named 'numba' (blocked by the test)")
        sys.meta_path.insert(0, Block())
        import torch
        from scripts.networks import BiMamba2D, MambaConfig
        from scripts.networks.selective_scan import resolve_backend
        from scripts.networks.selective_scan_numba import numba_available
        assert not numba_available()
        assert resolve_backend("auto", "cpu") == "chunked"
        m = BiMamba2D(8, MambaConfig(d_state=4)).double()
        x = torch.randn(2, 8, 5, 7, dtype=torch.float64, requires_grad=True)
        y = m(x)
        torch.testing.assert_close(y, m.forward_reference(x), rtol=1e-10, atol=1e-10)
        y.square().sum().backward()
        try:
            BiMamba2D(8, MambaConfig(backend="numba"))
        except RuntimeError as e:
            assert "numba" in str(e) and "pip install numba" in str(e), e
        else:
            raise AssertionError("backend='numba' without numba did not fail")
        print("ok")
        """
    )
    bundle = Path(__file__).resolve().parents[1] / "bundle"
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": str(bundle)}
    )
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]


def test_chunked_scan_still_the_float32_reference_of_the_benchmarks():
    """The chunked path is the documented fallback: it must keep agreeing with the fused one at the step's shapes
    (one small case of each kind the `small` preset uses)."""
    for b, e, length, n in ((2, 16, 256, 8), (1, 32, 64, 16)):
        inp = _inputs(b=b, e=e, n=n, length=length, dtype=torch.float32)
        a = selective_scan_chunked(**inp, delta_softplus=True)
        c = sn.selective_scan_numba(**inp, delta_softplus=True)
        torch.testing.assert_close(c, a, rtol=1e-5, atol=1e-5)


def test_warm_up_inside_no_grad_and_inference_mode():
    """warm_up compiles the backward kernels too, also when called from inference code."""
    for ctx in (torch.no_grad, torch.inference_mode):
        with ctx():
            assert sn.warm_up() >= 0.0
    assert kernels._forward_kernel.signatures and kernels._backward_kernel.signatures


def test_copies_of_the_bundle_share_one_compiled_cache(tmp_path):
    """A MONAI Label app folder or an unpacked Model Zoo archive is a copy of `scripts`: its kernels map to the same
    cache folder as this checkout's (keyed on the file's content, not its folder), so they load instead of compiling.
    An edited copy gets a folder of its own."""
    import shutil

    copy = tmp_path / "_numba_kernels.py"
    shutil.copy2(kernels.__file__, copy)
    func = kernels._forward_kernel.py_func
    here = kernels._SharedCacheLocator(func, kernels.__file__)
    assert kernels._SharedCacheLocator(func, str(copy)).get_cache_path() == here.get_cache_path()
    assert kernels._forward_kernel._cache._cache_path == here.get_cache_path()  # the locator numba actually uses
    copy.write_text(copy.read_text() + "\n# edited\n")
    assert kernels._SharedCacheLocator(func, str(copy)).get_cache_path() != here.get_cache_path()
