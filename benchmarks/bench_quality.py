"""Quality on real data: VL-DUN joint restoration + segmentation against baselines, and the paper's ablations.

Follows ``../shared/design/benchmark-protocol.md``: protocol splits, resize to S x S (bilinear + anti-aliasing /
nearest), per-slice min-max, a fresh random k-space mask per training sample and one fixed mask per test slice
from ``sample_seed(global seed, dataset, slice index)``, PSNR/SSIM with scikit-image conventions (data_range 1,
7 x 7 window, outputs clipped to [0, 1]), Dice/IoU per class per slice after argmax (a class absent from both
ground truth and prediction is skipped on that slice; a false positive on a slice without the class counts 0).

Methods (``--methods``; ``baselines``, ``ablations`` and ``all`` are groups):

==================== ==================================================================================
zero_filled          the degraded input itself (no learning)
rec_unet             MONAI BasicUNet, output = input + residual, L1 loss
seg_unet_degraded    BasicUNet segmentation on the degraded input, Dice-CE
seg_unet_clean       BasicUNet segmentation on the clean input (upper bound; tested on clean images)
sequential           rec_unet (as trained above) then a BasicUNet segmentation trained on its outputs
vldun                VL-DUN joint (``--preset``, default ``small``), loss VLDUNLoss: L1 + DiceCE + focal + CE
vldun_no_clip        ablations (paper Table 3), same training as ``vldun`` with one switch of VLDUN changed:
vldun_frozen_clip      use_clip_prior=False / tune_clip=False / freq_decouple=False / use_seg_head=False /
vldun_no_fd            use_rec_head=False
vldun_no_seg
vldun_no_rec
==================== ==================================================================================

Every learned method gets the same budget: ``--iterations`` optimiser steps of batch ``--batch-size`` (AdamW,
``--lr``, random flips, last iterate), optionally capped by ``--time-budget`` seconds; the wall-clock time of each
is reported separately. The sequential pipeline's segmentation network gets the same iterations on top of the
restoration network it reuses (its reported time is the sum).

Results: ``<out-dir>/quality_<tag>.json`` (every method's summary and per-slice metrics; a later run with the
same tag adds or replaces methods), ``quality_<tag>.md`` (tables, machine, date, exact commands) and
``quality_<tag>.png``. Data: ``--datasets`` takes the shared settings ``acdc_8x``, ``acdc_4x``, ``covid_60``
(found under ``--data-root``, default ``../shared/data`` next to the repository; skipped cleanly when absent) or
``PATH`` / ``PATH@DEGRADATION`` for any prepared dataset: a 2D slice folder (``images/`` + ``labels/``) or a
datalist JSON from ``scripts.data.prepare`` (NIfTI volumes are sliced). DEGRADATION is ``cartesian:ACC:CF`` or
``radial:SPOKES`` (default from the modality: MRI ``cartesian:8:0.04``, CT ``radial:60``).

Defaults: 64 px, batch 4, 150 iterations per learned method, so that all eleven methods of one dataset run in
about 45 minutes on a 2-core CPU (the runs recorded in ``results/``); they are labelled *reduced budget*. The
protocol's own budget is ``--size 128 --batch-size 8 --iterations 1200`` (VL-DUN ``small``: ~18 s per iteration
there on that CPU, so meant for a GPU). Examples::

    python benchmarks/bench_quality.py --datasets acdc_8x --methods baselines vldun
    python benchmarks/bench_quality.py --datasets acdc_8x --size 128 --batch-size 8 --iterations 1200

Results files can be combined afterwards: ``--aggregate OUT.md A.json B.json ...`` summarises runs that differ only
in ``--train-seed`` (spread over seeds, claims per seed); ``--merge OUT.json A.json B.json ...`` puts methods of runs
on the same test set and recipe but with different iteration counts or caps into one table with paired claims (e.g.
VL-DUN capped by wall-clock next to UNets at the same number of iterations); ``--render JSON`` redraws one file.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]
for _p in (str(_REPO / "bundle"), str(_REPO)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks._slices import LoadedDataset, load_slices  # noqa: E402

__all__ = [
    "ABLATIONS",
    "BASELINES",
    "DEFAULT_DATA_ROOT",
    "METHODS",
    "SETTINGS",
    "Degradation",
    "dice_iou_per_class",
    "main",
    "make_test_inputs",
    "parse_degradation",
    "psnr_ssim",
    "summarize",
]

DEFAULT_DATA_ROOT = _REPO.parent / "shared" / "data"
BASELINES = ("zero_filled", "rec_unet", "seg_unet_degraded", "seg_unet_clean", "sequential")
ABLATIONS = ("vldun_no_clip", "vldun_frozen_clip", "vldun_no_fd", "vldun_no_seg", "vldun_no_rec")
METHODS = BASELINES + ("vldun",) + ABLATIONS
ABLATION_SWITCHES: dict[str, dict[str, Any]] = {
    "vldun": {},
    "vldun_no_clip": {"use_clip_prior": False},
    "vldun_frozen_clip": {"tune_clip": False},
    "vldun_no_fd": {"freq_decouple": False},
    "vldun_no_seg": {"use_seg_head": False},
    "vldun_no_rec": {"use_rec_head": False},
}
METHOD_LABELS = {
    "zero_filled": "zero-filled input",
    "rec_unet": "restoration-only UNet (input + residual, L1)",
    "seg_unet_degraded": "segmentation-only UNet on the degraded input (Dice-CE)",
    "seg_unet_clean": "segmentation-only UNet on the clean input (upper bound)",
    "sequential": "sequential: restoration UNet, then segmentation UNet on its outputs",
    "vldun": "VL-DUN joint",
    "vldun_no_clip": "VL-DUN w/o CLIP prior",
    "vldun_frozen_clip": "VL-DUN w/o CLIP tuning (frozen CLIP)",
    "vldun_no_fd": "VL-DUN w/o frequency decoupling",
    "vldun_no_seg": "VL-DUN w/o segmentation head",
    "vldun_no_rec": "VL-DUN w/o reconstruction head",
}
#: shared evaluation settings of the protocol: folder under --data-root, degradation
SETTINGS: dict[str, tuple[str, str]] = {
    "acdc_8x": ("acdc", "cartesian:8:0.04"),
    "acdc_4x": ("acdc", "cartesian:4:0.08"),
    "covid_60": ("covid_ct_medseg_infnet", "radial:60"),
}
DEFAULT_DEGRADATION = {"MRI": "cartesian:8:0.04", "CT": "radial:60"}


# ------------------------------------------------------------------------------------------------ degradation
@dataclass(frozen=True)
class Degradation:
    kind: str  # "cartesian" | "radial"
    acceleration: float = 8.0
    center_fraction: float = 0.04
    spokes: int = 60

    def spec(self) -> str:
        if self.kind == "cartesian":
            return f"cartesian:{self.acceleration:g}:{self.center_fraction:g}"
        return f"radial:{self.spokes}"

    def describe(self) -> str:
        if self.kind == "cartesian":
            return (
                f"random Cartesian columns, {self.acceleration:g}x, centre fraction {self.center_fraction:g} "
                "(fastMRI/MONAI RandomKspaceMask rule)"
            )
        return f"radial, {self.spokes} spokes through the k-space centre"

    def transform(self):
        """A ``scripts.transforms.kspace.KspaceUndersample`` for this setting (the bundle's own transform)."""
        from scripts.transforms.kspace import KspaceUndersample

        if self.kind == "cartesian":
            return KspaceUndersample(
                mask_type="cartesian",
                center_fractions=[self.center_fraction],
                accelerations=[self.acceleration],
                phase_encode_axis=-1,
            )
        return KspaceUndersample(mask_type="radial", num_spokes=[self.spokes])


def parse_degradation(spec: str) -> Degradation:
    """``cartesian:ACC:CF`` (e.g. ``cartesian:8:0.04``) or ``radial:SPOKES`` (e.g. ``radial:60``)."""
    parts = spec.strip().lower().split(":")
    try:
        if parts[0] == "cartesian" and len(parts) == 3:
            return Degradation("cartesian", acceleration=float(parts[1]), center_fraction=float(parts[2]))
        if parts[0] == "radial" and len(parts) == 2:
            return Degradation("radial", spokes=int(parts[1]))
    except ValueError:
        pass
    raise ValueError(f"bad degradation {spec!r}: use cartesian:ACC:CF (e.g. cartesian:8:0.04) or radial:SPOKES.")


def make_test_inputs(clean: np.ndarray, deg: Degradation, global_seed: int, dataset: str) -> np.ndarray:
    """Degraded test inputs: slice ``i`` gets the fixed mask drawn from ``sample_seed(global_seed, dataset, i)``."""
    from scripts.transforms.kspace import sample_seed

    us = deg.transform()
    out = np.empty_like(clean, dtype=np.float32)
    for i in range(clean.shape[0]):
        y = us(torch.as_tensor(clean[i][None]), seed=sample_seed(global_seed, dataset, i))
        out[i] = np.asarray(y[0], dtype=np.float32)
    return out


# ------------------------------------------------------------------------------------------------ metrics
def psnr_ssim(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """PSNR and SSIM of one slice, scikit-image conventions: data_range 1, 7x7 window, ``pred`` clipped to [0, 1]."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    gt = np.asarray(gt, dtype=np.float64)
    pred = np.clip(np.asarray(pred, dtype=np.float64), 0.0, 1.0)
    return (
        float(peak_signal_noise_ratio(gt, pred, data_range=1.0)),
        float(structural_similarity(gt, pred, data_range=1.0, win_size=7)),
    )


def dice_iou_per_class(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Dice and IoU of foreground classes 1..K-1 on one slice; NaN where the class is absent from both."""
    dice = np.full(num_classes - 1, np.nan)
    iou = np.full(num_classes - 1, np.nan)
    for c in range(1, num_classes):
        g, p = gt == c, pred == c
        ng, npred = int(g.sum()), int(p.sum())
        if ng == 0 and npred == 0:
            continue
        inter = int(np.logical_and(g, p).sum())
        dice[c - 1] = 2.0 * inter / (ng + npred)
        iou[c - 1] = inter / (ng + npred - inter)
    return dice, iou


def _mean_std(x: Sequence[float]) -> tuple[float, float, int]:
    a = np.asarray([v for v in x if v is not None and np.isfinite(v)], dtype=np.float64)
    if a.size == 0:
        return float("nan"), float("nan"), 0
    return float(a.mean()), float(a.std()), int(a.size)


def summarize(
    clean: np.ndarray,
    labels: np.ndarray,
    restored: np.ndarray | None,
    seg: np.ndarray | None,
    num_classes: int,
) -> dict[str, Any]:
    """Per-slice and summary metrics of one method on the test set (None parts are not evaluated)."""
    out: dict[str, Any] = {"n_slices": int(clean.shape[0])}
    if restored is not None:
        ps = [psnr_ssim(clean[i], restored[i]) for i in range(clean.shape[0])]
        out["psnr"] = [round(p, 4) for p, _ in ps]
        out["ssim"] = [round(s, 5) for _, s in ps]
        out["psnr_mean"], out["psnr_std"], _ = _mean_std(out["psnr"])
        out["ssim_mean"], out["ssim_std"], _ = _mean_std(out["ssim"])
    if seg is not None:
        per = [dice_iou_per_class(labels[i], seg[i], num_classes) for i in range(labels.shape[0])]
        dice = np.stack([d for d, _ in per])  # (N, K-1)
        iou = np.stack([j for _, j in per])
        with np.errstate(all="ignore"):
            slice_dice = [float(np.nanmean(r)) if np.isfinite(r).any() else None for r in dice]
            slice_iou = [float(np.nanmean(r)) if np.isfinite(r).any() else None for r in iou]
        out["dice_per_slice"] = [None if v is None else round(v, 5) for v in slice_dice]
        out["iou_per_slice"] = [None if v is None else round(v, 5) for v in slice_iou]
        out["dice_mean"], out["dice_std"], out["dice_n"] = _mean_std(slice_dice)
        out["iou_mean"], out["iou_std"], _ = _mean_std(slice_iou)
        out["dice_class"] = [_mean_std(dice[:, c])[:3] for c in range(num_classes - 1)]
        out["iou_class"] = [_mean_std(iou[:, c])[:3] for c in range(num_classes - 1)]
        out["dice_class_per_slice"] = [[None if not np.isfinite(v) else round(float(v), 5) for v in r] for r in dice]
    return out


# ------------------------------------------------------------------------------------------------ networks
def make_unet(out_channels: int, features: Sequence[int]) -> nn.Module:
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=out_channels, features=tuple(features))


def make_vldun(method: str, preset: str, num_classes: int, scan_chunk: int | None) -> nn.Module:
    from scripts.networks import VLDUN

    kw = dict(ABLATION_SWITCHES[method])
    if scan_chunk:
        kw["chunk_size"] = scan_chunk
    return VLDUN.from_preset(preset, num_classes=num_classes, in_channels=1, out_channels=1, **kw)


def n_params(net: nn.Module) -> int:
    """Parameters of a network: VL-DUN's own count (trainable, without the open_clip encoder), else all."""
    if hasattr(net, "num_parameters"):
        return int(net.num_parameters())
    return sum(p.numel() for p in net.parameters())


# ------------------------------------------------------------------------------------------------ training
@dataclass
class Batch:
    clean: torch.Tensor  # (B, 1, S, S)
    degraded: torch.Tensor
    label: torch.Tensor  # (B, 1, S, S) long


class BatchSampler:
    """Epoch-wise shuffled batches with random flips and a fresh mask per sample (seeded: same for every method)."""

    def __init__(self, data: LoadedDataset, deg: Degradation, batch_size: int, seed: int):
        self.images, self.labels = data.train.images, data.train.labels
        self.batch_size = int(batch_size)
        self.rng = np.random.RandomState(seed % 2**32)
        self.undersample = deg.transform()
        self.undersample.set_random_state(seed=seed % 2**32)
        self.order: list[int] = []

    def _indices(self) -> list[int]:
        idx = []
        while len(idx) < self.batch_size:
            if not self.order:
                self.order = list(self.rng.permutation(len(self.images)))
            idx.append(self.order.pop())
        return idx

    def next(self) -> Batch:
        idx = self._indices()
        imgs, labs = self.images[idx].copy(), self.labels[idx].copy()
        for b in range(len(idx)):
            for ax in (-1, -2):
                if self.rng.rand() < 0.5:
                    imgs[b], labs[b] = np.flip(imgs[b], ax), np.flip(labs[b], ax)
        clean = torch.as_tensor(np.ascontiguousarray(imgs))[:, None]
        degraded = self.undersample(clean)  # (B, 1, S, S): independent masks per sample
        return Batch(clean, torch.as_tensor(np.asarray(degraded), dtype=torch.float32), torch.as_tensor(labs)[:, None])


def train(
    net: nn.Module,
    loss_fn: Callable[[nn.Module, Batch], torch.Tensor],
    sampler: BatchSampler,
    iterations: int,
    lr: float,
    time_budget: float | None,
    log_every: int,
    name: str,
) -> dict[str, Any]:
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    net.train()
    t0 = time.perf_counter()
    losses: list[float] = []
    it = 0
    while it < iterations:
        if time_budget is not None and time.perf_counter() - t0 >= time_budget:
            break
        batch = sampler.next()
        loss = loss_fn(net, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        it += 1
        if log_every and (it % log_every == 0 or it == 1):
            el = time.perf_counter() - t0
            print(f"  [{name}] it {it}/{iterations} loss {np.mean(losses[-log_every:]):.4f} {el:.0f}s", flush=True)
    seconds = time.perf_counter() - t0
    net.eval()
    return {"iterations": it, "train_seconds": seconds, "loss_first": losses[:1], "loss_last": losses[-20:]}


@torch.no_grad()
def predict(fn: Callable[[torch.Tensor], dict[str, torch.Tensor]], inputs: np.ndarray, batch: int) -> dict:
    outs: dict[str, list[np.ndarray]] = {}
    for i in range(0, inputs.shape[0], batch):
        x = torch.as_tensor(inputs[i : i + batch])[:, None]
        for k, v in fn(x).items():
            outs.setdefault(k, []).append(v.detach().cpu().numpy())
    return {k: np.concatenate(v) for k, v in outs.items()}


def _seg_loss():
    from monai.losses import DiceCELoss

    return DiceCELoss(to_onehot_y=True, softmax=True)


def _residual(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x + net(x)


# ------------------------------------------------------------------------------------------------ runner
class Runner:
    """Trains and evaluates the methods on one dataset / degradation."""

    def __init__(self, data: LoadedDataset, deg: Degradation, args: argparse.Namespace):
        self.data, self.deg, self.args = data, deg, args
        self.k = data.num_classes
        t = time.perf_counter()
        self.test_clean = data.test.images
        self.test_inputs = make_test_inputs(self.test_clean, deg, args.seed, data.name)
        self.mask_seconds = time.perf_counter() - t
        self.rec_net: nn.Module | None = None
        self.rec_record: dict[str, Any] | None = None

    def sampler(self) -> BatchSampler:
        return BatchSampler(self.data, self.deg, self.args.batch_size, self._train_seed())

    def _train_seed(self) -> int:
        a = self.args
        return a.seed if a.train_seed is None else a.train_seed

    def _train(self, net, loss_fn, name):
        a = self.args
        torch.manual_seed(self._train_seed())
        return train(net, loss_fn, self.sampler(), a.iterations, a.lr, a.time_budget, a.log_every, name)

    def _eval(self, restored: np.ndarray | None, seg_logits: np.ndarray | None) -> dict[str, Any]:
        restored = None if restored is None else restored[:, 0]
        seg = None if seg_logits is None else seg_logits.argmax(1)
        return summarize(self.test_clean, self.data.test.labels, restored, seg, self.k)

    def run(self, method: str) -> dict[str, Any]:
        a = self.args
        torch.manual_seed(self._train_seed())
        rec: dict[str, Any] = {"method": method}
        if method == "zero_filled":
            t = time.perf_counter()
            rec.update(self._eval(self.test_inputs[:, None], None))
            rec.update(iterations=0, train_seconds=0.0, sec_per_iter=0.0, params=0)
            rec["eval_seconds"] = time.perf_counter() - t
            return rec
        if method == "rec_unet":
            net = make_unet(1, a.unet_features)
            l1 = nn.L1Loss()
            rec.update(self._train(net, lambda n, b: l1(_residual(n, b.degraded), b.clean), method))
            self.rec_net, self.rec_record = net, dict(rec)
            t = time.perf_counter()
            out = predict(lambda x: {"r": _residual(net, x)}, self.test_inputs, a.eval_batch)
            rec.update(self._eval(out["r"], None))
        elif method in ("seg_unet_degraded", "seg_unet_clean"):
            net = make_unet(self.k, a.unet_features)
            dce = _seg_loss()
            use_clean = method == "seg_unet_clean"
            rec.update(self._train(net, lambda n, b: dce(n(b.clean if use_clean else b.degraded), b.label), method))
            t = time.perf_counter()
            inputs = self.test_clean if use_clean else self.test_inputs
            out = predict(lambda x: {"s": net(x)}, inputs, a.eval_batch)
            rec.update(self._eval(None, out["s"]))
        elif method == "sequential":
            extra = 0.0
            if self.rec_net is None:
                print("  [sequential] training its restoration UNet first", flush=True)
                first = self.run("rec_unet")
                extra = first["train_seconds"]
            assert self.rec_net is not None and self.rec_record is not None
            rnet = self.rec_net.eval()
            for p in rnet.parameters():
                p.requires_grad_(False)
            net = make_unet(self.k, a.unet_features)
            dce = _seg_loss()

            def loss(n, b):
                with torch.no_grad():
                    r = _residual(rnet, b.degraded).clamp(0, 1)
                return dce(n(r), b.label)

            rec.update(self._train(net, loss, method))
            rec["seg_train_seconds"] = rec["train_seconds"]
            rec["rec_train_seconds"] = self.rec_record["train_seconds"]
            rec["train_seconds"] = rec["seg_train_seconds"] + rec["rec_train_seconds"]
            rec["rec_iterations"] = self.rec_record["iterations"]
            rec["rec_trained_here"] = extra > 0
            t = time.perf_counter()

            def pipe(x):
                r = _residual(rnet, x)
                return {"r": r, "s": net(r.clamp(0, 1))}

            out = predict(pipe, self.test_inputs, a.eval_batch)
            rec.update(self._eval(out["r"], out["s"]))
            rec["params"] = n_params(rnet) + n_params(net)
        elif method in ABLATION_SWITCHES:
            from scripts.prompts import modality_index
            from scripts.workflows.losses import VLDUNLoss

            net = make_vldun(method, a.preset, self.k, a.scan_chunk)
            loss_fn = VLDUNLoss(lambda_rec=1.0, lambda_seg=1.0, lambda_mod=a.lambda_prior, lambda_deg=a.lambda_prior)
            mod = modality_index(self.data.modality.split("/")[0])
            deg_id = self.deg.transform().degradation

            def loss(n, b):
                bs = b.clean.shape[0]
                tg = {
                    "target": b.clean,
                    "label": b.label,
                    "modality": torch.full((bs,), mod, dtype=torch.long),
                    "degradation": torch.full((bs,), deg_id, dtype=torch.long),
                }
                return loss_fn(n(b.degraded), tg)

            rec.update(self._train(net, loss, method))
            t = time.perf_counter()

            def fwd(x):
                o = net(x)
                res = {}
                if "restored" in o:
                    res["r"] = o["restored"]
                if "seg" in o:
                    res["s"] = o["seg"]
                if "modality_logits" in o:
                    res["m"] = o["modality_logits"]
                    res["d"] = o["degradation_logits"]
                return res

            out = predict(fwd, self.test_inputs, a.eval_batch)
            rec.update(self._eval(out.get("r"), out.get("s")))
            if "m" in out:
                rec["modality_accuracy"] = float((out["m"].argmax(1) == mod).mean())
                rec["degradation_accuracy"] = float((out["d"].argmax(1) == deg_id).mean())
            rec["switches"] = ABLATION_SWITCHES[method]
            rec["preset"] = a.preset
        else:
            raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
        rec["eval_seconds"] = time.perf_counter() - t
        rec.setdefault("params", n_params(net))
        rec["sec_per_iter"] = rec["train_seconds"] / max(rec["iterations"], 1)
        return rec


# ------------------------------------------------------------------------------------------------ reporting
def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import subprocess

    import monai

    def _git(*cmd: str) -> str:
        try:
            out = subprocess.run(["git", *cmd], cwd=_REPO, capture_output=True, text=True, timeout=20)
            return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--", "bundle/scripts", "benchmarks/bench_quality.py"))
    return {
        "git_commit": (commit + ("+uncommitted changes" if dirty else "")) or "unknown",
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
    }


def _fmt(m: float, s: float, digits: int) -> str:
    if m is None or not np.isfinite(m):
        return "–"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def _params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n else "–"


def _ordered(methods: Mapping[str, Any]) -> list[str]:
    return [m for m in METHODS if m in methods] + sorted(m for m in methods if m not in METHODS)


def _paired(a: Sequence, b: Sequence, groups: Sequence[str] | None = None) -> tuple[float, float, int, int] | None:
    """Mean of A − B and the half-width of its 95% interval: (mean, half, n_groups, n_slices).

    With ``groups`` (the patient of each test slice) the differences are first averaged per patient and the interval
    is ``t(0.975, G − 1) · sd / sqrt(G)`` over the G patients (slices of one patient are not independent);
    without, each slice is its own group.
    """
    from scipy.stats import t as student_t

    groups = list(groups) if groups is not None and len(groups) == len(a) else [str(i) for i in range(len(a))]
    by: dict[str, list[float]] = {}
    n = 0
    for x, y, g in zip(a, b, groups):
        if x is not None and y is not None and np.isfinite(x) and np.isfinite(y):
            by.setdefault(g, []).append(x - y)
            n += 1
    d = np.array([np.mean(v) for v in by.values()])
    if d.size < 2:
        return None
    half = float(student_t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    return float(d.mean()), half, int(d.size), n


CLAIMS = (
    ("joint beats separate (Dice)", "vldun", "sequential", "dice_per_slice"),
    ("joint beats separate (PSNR)", "vldun", "rec_unet", "psnr"),
    ("joint vs seg-only on degraded input (Dice)", "vldun", "seg_unet_degraded", "dice_per_slice"),
    ("FD helps (PSNR)", "vldun", "vldun_no_fd", "psnr"),
    ("FD helps (Dice)", "vldun", "vldun_no_fd", "dice_per_slice"),
    ("CLIP prior helps (PSNR)", "vldun", "vldun_no_clip", "psnr"),
    ("CLIP prior helps (Dice)", "vldun", "vldun_no_clip", "dice_per_slice"),
    ("CLIP tuning helps (PSNR)", "vldun", "vldun_frozen_clip", "psnr"),
    ("CLIP tuning helps (Dice)", "vldun", "vldun_frozen_clip", "dice_per_slice"),
    ("seg head helps restoration (PSNR)", "vldun", "vldun_no_seg", "psnr"),
    ("rec head helps segmentation (Dice)", "vldun", "vldun_no_rec", "dice_per_slice"),
)


def render_markdown(res: Mapping[str, Any]) -> str:
    cfg, methods = res["config"], res["methods"]
    names = res["class_names"][1:]
    lines = [
        f"# Quality benchmark: {res['title']}",
        "",
        f"**{res['budget_label']}**. Generated by `benchmarks/bench_quality.py`; protocol: "
        "`../shared/design/benchmark-protocol.md`. Data are read from the shared folder and never copied into "
        "this repository.",
        "",
        "## Setup",
        "",
        f"- dataset: `{res['dataset']}` ({res['modality']}), source `{res['source']}`; "
        f"train {res['train_slices']} slices, test {res['test_slices']} slices; classes {res['class_names']}",
        f"- degradation: {res['degradation_text']} (`{res['degradation']}`); test masks fixed per slice from "
        f"`sample_seed({cfg['seed']}, '{res['dataset']}', slice_index)`; training masks fresh per sample; "
        f"training seed (initialisation, batch order, training masks) {cfg.get('train_seed', cfg['seed'])}",
        f"- size {cfg['size']}×{cfg['size']}, batch {cfg['batch_size']}, AdamW lr {cfg['lr']}, random flips, "
        + (
            "iterations per learned method as in the table's *iterations* column (runs merged below)"
            if res.get("merged_from")
            else f"{cfg['iterations']} iterations per learned method"
            + (f" (capped at {cfg['time_budget']} s)" if cfg.get("time_budget") else "")
        )
        + f", last iterate; UNets: MONAI BasicUNet features {tuple(cfg['unet_features'])}; VL-DUN preset "
        f"`{cfg['preset']}`, VLDUNLoss (L1 + Dice-CE + {cfg['lambda_prior']}·focal(modality) + "
        f"{cfg['lambda_prior']}·CE(degradation)); CLIP randomly initialised (no pretrained weights available)",
        *(
            f"- merged by `--merge` from `{src['file']}`: {', '.join(src['methods'])}; {src['iterations']} "
            f"iterations"
            + (f", capped at {src['time_budget']:.0f} s" if src.get("time_budget") else "")
            + f", git `{src.get('git_commit')}`"
            for src in res.get("merged_from", ())
        ),
        f"- code: git `{res['machine'].get('git_commit', 'not recorded')}`; VL-DUN preset `{cfg['preset']}` = "
        f"`{json.dumps(res.get('vldun_preset_config', 'not recorded'))}`",
        f"- threads: torch.set_num_threads({cfg['threads']}); machine: {res['machine']['cpu']} "
        f"({res['machine']['cpu_count']} logical CPUs, shared with other jobs), {res['machine']['platform']}, "
        f"torch {res['machine']['torch']}, MONAI {res['machine']['monai']}",
        "- metrics: PSNR/SSIM per slice (skimage, data_range 1, 7×7 window, outputs clipped to [0, 1]); Dice/IoU per "
        "class per slice after argmax (class absent from both prediction and truth: skipped; false positive on a "
        "slice without the class: 0); *mean Dice/IoU* = per-slice mean over the foreground classes evaluated on "
        "that slice, then mean ± std over slices; std is the population std over test slices",
        "",
        "## Results",
        "",
        "| method | iterations | train time (s) | s / it | params | PSNR (dB) | SSIM | mean Dice | mean IoU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in _ordered(methods):
        r = methods[m]
        lines.append(
            f"| {METHOD_LABELS.get(m, m)} (`{m}`) | {r['iterations']} | {r['train_seconds']:.0f} | "
            f"{r['sec_per_iter']:.2f} | {_params(r['params'])} | {_fmt(r.get('psnr_mean'), r.get('psnr_std'), 2)} "
            f"| {_fmt(r.get('ssim_mean'), r.get('ssim_std'), 3)} | {_fmt(r.get('dice_mean'), r.get('dice_std'), 3)} "
            f"| {_fmt(r.get('iou_mean'), r.get('iou_std'), 3)} |"
        )
    seg_methods = [m for m in _ordered(methods) if "dice_class" in methods[m]]
    if seg_methods:
        lines += ["", "### Dice per class (mean ± std over the slices where the class is evaluated; n)", ""]
        lines += ["| method | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for m in seg_methods:
            cells = [f"{_fmt(mu, sd, 3)} (n={n})" for mu, sd, n in methods[m]["dice_class"]]
            lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
        lines += ["", "### IoU per class", ""]
        lines += ["| method | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for m in seg_methods:
            cells = [_fmt(mu, sd, 3) for mu, sd, _ in methods[m]["iou_class"]]
            lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
    prior = [m for m in _ordered(methods) if "modality_accuracy" in methods[m]]
    if prior:
        lines += ["", "CLIP prior heads on the test inputs (one modality and one degradation class in this set): "]
        lines[-1] += "; ".join(
            f"`{m}` modality acc {methods[m]['modality_accuracy']:.2f}, degradation acc "
            f"{methods[m]['degradation_accuracy']:.2f}"
            for m in prior
        )
    claims = []
    for text, a, b, key in CLAIMS:
        if a in methods and b in methods and key in methods[a] and key in methods[b]:
            p = _paired(methods[a][key], methods[b][key], res.get("test_groups"))
            if p is not None:
                unit = " dB" if key == "psnr" else ""
                verdict = "A > B" if p[0] - p[1] > 0 else "A < B" if p[0] + p[1] < 0 else "undecided"
                claims.append(
                    f"| {text} | `{a}` | `{b}` | {p[0]:+.3f} ± {p[1]:.3f}{unit} | {p[2]} / {p[3]} | {verdict} |"
                )
    if claims:
        lines += [
            "",
            "## Paired differences (A − B, 95% interval over patients)",
            "",
            "Per test slice A − B, averaged per patient (slices of one patient are not independent), then mean ± "
            "t(0.975, G−1)·sd/√G over the G patients (each slice is its own group where the data have no patient "
            "ids). *undecided*: the interval contains 0. This is the noise of the test set only; the spread over "
            "training seeds is not measured.",
            "",
            "| claim | A | B | A − B | patients / slices | verdict |",
            "|---|---|---|---|---|---|",
            *claims,
        ]
    lines += ["", "## Commands", ""]
    for c in res["commands"]:
        done = [m for m in c["methods"] if m in methods]
        state = "" if c.get("complete", True) else "; stopped before the end, the finished methods are in the tables"
        lines.append(f"- {c['date']} ({', '.join(done)}{state}):")
        lines += ["", "  ```bash", f"  {c['command']}", "  ```", ""]
    lines += [f"Total wall-clock of the runs: {sum(c['seconds'] for c in res['commands']) / 60:.1f} min.", ""]
    if res.get("plot"):
        lines += [f"![quality plot]({res['plot']})", ""]
    return "\n".join(lines)


def render_seed_summary(results: Sequence[Mapping[str, Any]], sources: Sequence[str]) -> str:
    """Markdown of several runs that differ only in the training seed: per-method mean ± std over seeds of the
    test-set means, and per claim the paired difference of every seed with its patient-level 95% interval.

    A claim is *supported* when every seed shows A > B with an interval excluding 0, *contradicted* when every seed
    shows A < B likewise, and *undecided* otherwise.
    """
    if not results:
        raise ValueError("no results to aggregate")
    keys = ("dataset", "degradation")
    ref = results[0]
    for r in results[1:]:
        same = all(r[k] == ref[k] for k in keys)
        cfg_a = {k: v for k, v in r["config"].items() if k != "train_seed"}
        cfg_b = {k: v for k, v in ref["config"].items() if k != "train_seed"}
        if not same or cfg_a != cfg_b:
            raise ValueError("the runs to aggregate must differ only in their training seed")
    seeds = [r["config"].get("train_seed", r["config"]["seed"]) for r in results]
    methods = [m for m in METHODS if any(m in r["methods"] for r in results)]
    cfg = ref["config"]
    lines = [
        f"# Quality benchmark over training seeds: {ref['title']}",
        "",
        f"**{ref['budget_label']}**",
        "",
        f"Aggregated by `python benchmarks/bench_quality.py --aggregate` from {', '.join(f'`{s}`' for s in sources)} "
        f"(training seeds {seeds}; everything else identical: same test slices and test masks, size {cfg['size']}, "
        f"batch {cfg['batch_size']}, {cfg['iterations']} iterations, lr {cfg['lr']}). Setup, machine and the exact "
        "commands are in those files.",
        "",
        "## Test-set means, mean ± std over training seeds (n = seeds)",
        "",
        "| method | n | PSNR (dB) | SSIM | mean Dice | mean IoU |",
        "|---|---|---|---|---|---|",
    ]

    def over_seeds(m: str, key: str, digits: int) -> str:
        v = [r["methods"][m][key] for r in results if m in r["methods"] and key in r["methods"][m]]
        if not v:
            return "–"
        return f"{np.mean(v):.{digits}f} ± {np.std(v, ddof=1) if len(v) > 1 else 0.0:.{digits}f}"

    for m in methods:
        n = sum(m in r["methods"] for r in results)
        lines.append(
            f"| {METHOD_LABELS.get(m, m)} (`{m}`) | {n} | {over_seeds(m, 'psnr_mean', 2)} | "
            f"{over_seeds(m, 'ssim_mean', 3)} | {over_seeds(m, 'dice_mean', 3)} | {over_seeds(m, 'iou_mean', 3)} |"
        )
    lines += [
        "",
        "## Claims: A − B per seed (patient-level 95% interval, as in the per-run files)",
        "",
        "*supported*: A > B with an interval excluding 0 in every seed; *contradicted*: A < B likewise; "
        "otherwise *undecided*.",
        "",
        "| claim | A | B | " + " | ".join(f"seed {s}" for s in seeds) + " | verdict |",
        "|---|---|---|" + "---|" * len(seeds) + "---|",
    ]
    for text, a, b, key in CLAIMS:
        cells, signs = [], []
        for r in results:
            ms = r["methods"]
            p = None
            if a in ms and b in ms and key in ms[a] and key in ms[b]:
                p = _paired(ms[a][key], ms[b][key], r.get("test_groups"))
            if p is None:
                cells.append("–")
                signs.append(None)
                continue
            cells.append(f"{p[0]:+.3f} ± {p[1]:.3f}")
            signs.append(1 if p[0] - p[1] > 0 else -1 if p[0] + p[1] < 0 else 0)
        if all(x is None for x in signs):
            continue
        done = [x for x in signs if x is not None]
        verdict = (
            "supported"
            if all(x == 1 for x in done)
            else "contradicted"
            if all(x == -1 for x in done)
            else ("undecided")
        )
        if len(done) < len(signs):
            verdict += f" ({len(done)} of {len(signs)} seeds)"
        lines.append(f"| {text} | `{a}` | `{b}` | " + " | ".join(cells) + f" | {verdict} |")
    return "\n".join(lines) + "\n"


# Keys that must agree for rows of different runs to share one table: the test set, its masks and the training
# recipe. Iterations and the wall-clock cap may differ (that is the point of a merge); each row records its own.
_MERGE_KEYS = ("size", "batch_size", "lr", "seed", "train_seed", "preset", "lambda_prior", "unet_features")


def merge_runs(results: Sequence[Mapping[str, Any]], sources: Sequence[str], budget_label: str) -> dict[str, Any]:
    """One results dict from several runs on the same test set with the same recipe (e.g. UNets from one run,
    VL-DUN from another with a different iteration count), so that their rows and paired claims share one table.

    Raises ``ValueError`` naming the file and the key when the runs are not comparable, or when a method appears in
    more than one run (which row to keep would be a silent choice).
    """
    if len(results) < 2:
        raise ValueError("--merge needs at least two results files")
    ref, ref_src = results[0], sources[0]
    for r, src in zip(results[1:], sources[1:]):
        for key in ("dataset", "degradation", "test_ids"):
            if r.get(key) != ref.get(key):
                raise ValueError(f"{src}: {key} differs from {ref_src}; only runs on the same test set can be merged")
        for key in _MERGE_KEYS:
            if r["config"].get(key) != ref["config"].get(key):
                raise ValueError(
                    f"{src}: config {key}={r['config'].get(key)!r} differs from {ref_src} "
                    f"({ref['config'].get(key)!r}); only runs with the same recipe can be merged"
                )
    methods: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for r, src in zip(results, sources):
        for m, row in r["methods"].items():
            if m in methods:
                raise ValueError(f"method {m!r} is in both {origin[m]} and {src}; drop it from one of them")
            methods[m], origin[m] = row, src
    iterations = sorted({r["config"]["iterations"] for r in results})
    budgets = sorted({r["config"].get("time_budget") or 0 for r in results})
    config = {**ref["config"], "iterations": iterations[0] if len(iterations) == 1 else iterations}
    config["time_budget"] = (budgets[0] or None) if len(budgets) == 1 else [b or None for b in budgets]
    with_vldun = next((r for r in results if any(m.startswith("vldun") for m in r["methods"])), ref)
    prefix = ref["title"].split("px,")[0] + "px"
    return {
        **{k: v for k, v in ref.items() if k not in ("methods", "commands", "plot")},
        "title": f"{prefix}, merged from {len(results)} runs",
        "budget_label": budget_label,
        "config": config,
        "vldun_preset_config": with_vldun.get("vldun_preset_config", ref.get("vldun_preset_config")),
        "machine": with_vldun["machine"],
        "merged_from": [
            {
                "file": src,
                "methods": list(r["methods"]),
                "iterations": r["config"]["iterations"],
                "time_budget": r["config"].get("time_budget"),
                "git_commit": r["machine"].get("git_commit"),
            }
            for r, src in zip(results, sources)
        ],
        "methods": methods,
        "commands": [c for r in results for c in r["commands"]],
    }


def plot(res: Mapping[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    methods = res["methods"]
    order = _ordered(methods)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    panels = (("psnr", "PSNR (dB)"), ("dice", "mean Dice"), ("train_seconds", "training time (s)"))
    for ax, (key, title) in zip(axes, panels):
        ms = [m for m in order if (f"{key}_mean" in methods[m]) or (key == "train_seconds")]
        if key == "train_seconds":
            ms = [m for m in ms if methods[m]["iterations"] > 0]
            vals = [methods[m]["train_seconds"] for m in ms]
            errs = None
        else:
            vals = [methods[m][f"{key}_mean"] for m in ms]
            errs = [methods[m][f"{key}_std"] for m in ms]
        colors = ["tab:orange" if m.startswith("vldun") else "tab:blue" for m in ms]
        hatches = ["//" if m == "seg_unet_clean" else "" for m in ms]
        ax.bar(range(len(ms)), vals, yerr=errs, color=colors, capsize=3, hatch=hatches)
        if key == "psnr" and vals:
            lo = min(v - (e or 0) for v, e in zip(vals, errs))
            hi = max(v + (e or 0) for v, e in zip(vals, errs))
            ax.set_ylim(max(0.0, lo - 1.0), hi + 0.5)
            if "zero_filled" in ms:
                ax.axhline(methods["zero_filled"]["psnr_mean"], color="k", ls="--", lw=0.8, label="zero-filled")
                ax.legend(fontsize=8, loc="lower right")
        ax.set_xticks(range(len(ms)))
        ax.set_xticklabels(ms, rotation=45, ha="right", fontsize=8)
        ax.set_title(title)
        if key == "train_seconds" and vals:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"{res['title']} — mean ± std over test slices; hatched: clean-input upper bound\n{res['budget_label']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------------------------ CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python benchmarks/bench_quality.py",
        description="VL-DUN vs baselines and ablations on real data (benchmark protocol).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--datasets",
        nargs="+",
        default=["acdc_8x", "acdc_4x", "covid_60"],
        help=f"settings {sorted(SETTINGS)} under --data-root, or PATH[@DEGRADATION] of a slice folder / datalist",
    )
    p.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT), help="shared data folder (../shared/data)")
    p.add_argument("--methods", nargs="+", default=["all"], help=f"{list(METHODS)} or baselines/ablations/all")
    # defaults: the budget that fits in about an hour per dataset on a 2-core CPU with all 11 methods (VL-DUN
    # `small` costs ~2 s per iteration there); the protocol's figures need --size 128 --batch-size 8 --iterations 1200
    p.add_argument("--size", type=int, default=64, help="slice size S (protocol: 128 on CPU; default 64, see above)")
    p.add_argument("--iterations", type=int, default=150, help="optimiser steps per learned method")
    p.add_argument("--time-budget", type=float, default=None, help="wall-clock cap in seconds per learned method")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--eval-batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0, help="global seed (test-mask seeds; training too by default)")
    p.add_argument("--train-seed", type=int, default=None, help="seed of initialisation, batches, training masks")
    p.add_argument("--preset", default="small", help="VL-DUN preset (small; tiny for smoke tests)")
    p.add_argument("--scan-chunk", type=int, default=None, help="VL-DUN selective-scan chunk size (default: its own)")
    p.add_argument("--lambda-prior", type=float, default=0.1, help="weight of the modality and degradation terms")
    p.add_argument("--unet-features", type=lambda s: [int(v) for v in s.split(",")], default=[32, 32, 64, 128, 256, 32])
    p.add_argument("--modality", default=None, help="MRI|CT for a slice folder that is not a shared set")
    p.add_argument("--preset-data", default=None, help="scripts.data.prepare SLICE_PRESETS entry for a slice folder")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (1)")
    p.add_argument("--out-dir", default=str(_REPO / "benchmarks" / "results"))
    p.add_argument("--tag", default=None, help="results file tag (default: <setting>_s<size>_it<iterations>)")
    p.add_argument("--budget-label", default=None, help="label printed on the results (e.g. 'reduced budget')")
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--render", default=None, metavar="JSON", help="only re-render the .md/.png of a results JSON")
    p.add_argument(
        "--aggregate",
        nargs="+",
        default=None,
        metavar="FILE",
        help="OUT.md JSON JSON...: summarise runs that differ only in --train-seed",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="FILE",
        help="OUT.json JSON JSON...: one table from runs on the same test set and recipe (iterations may differ)",
    )
    return p


def _expand_methods(tokens: Sequence[str]) -> list[str]:
    out: list[str] = []
    for t in tokens:
        group = {"all": METHODS, "baselines": BASELINES, "ablations": ("vldun",) + ABLATIONS}.get(t)
        for m in group or (t,):
            if m not in METHODS:
                raise SystemExit(f"unknown method {m!r}; choose from {list(METHODS)} or baselines/ablations/all")
            if m not in out:
                out.append(m)
    return out


def _resolve(entry: str, data_root: Path) -> tuple[str, Path, str | None, bool]:
    """(setting name, source path, degradation spec or None, is_shared_setting)."""
    if entry in SETTINGS:
        folder, deg = SETTINGS[entry]
        return entry, data_root / folder, deg, True
    path, _, deg = entry.partition("@")
    return Path(path).name.split(".")[0], Path(path), deg or None, False


def run_dataset(entry: str, methods: list[str], args: argparse.Namespace, command: str) -> Path | None:
    setting, src, deg_spec, shared = _resolve(entry, Path(args.data_root))
    if not src.exists():
        msg = f"{entry}: {src} not found"
        if shared:
            print(f"SKIP {msg} (the shared data are optional; pass --data-root)", flush=True)
            return None
        raise SystemExit(f"error: {msg}")
    t_load = time.perf_counter()
    data = load_slices(src, args.size, preset=args.preset_data, modality=args.modality)
    deg = parse_degradation(deg_spec or DEFAULT_DEGRADATION.get(data.modality.split("/")[0], "cartesian:8:0.04"))
    print(
        f"== {setting}: {data.name} ({data.modality}), train {len(data.train)} / test {len(data.test)} slices at "
        f"{args.size}px, classes {data.class_names}, {deg.describe()} (loaded in {time.perf_counter() - t_load:.0f} s)",
        flush=True,
    )
    tag = args.tag or f"{setting}_s{args.size}_it{args.iterations}"
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jpath = out_dir / f"quality_{tag}.json"
    config = {
        "size": args.size,
        "iterations": args.iterations,
        "time_budget": args.time_budget,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "train_seed": args.seed if args.train_seed is None else args.train_seed,
        "preset": args.preset,
        "lambda_prior": args.lambda_prior,
        "unet_features": list(args.unet_features),
        "threads": args.threads,
        "scan_chunk": args.scan_chunk,
    }
    try:
        from scripts.networks import PRESETS

        vldun_cfg = dict(PRESETS.get(args.preset, {}))
    except ImportError:
        vldun_cfg = {}
    res: dict[str, Any] | None = None
    if jpath.is_file():
        old = json.loads(jpath.read_text())
        if old.get("config") == config and old.get("degradation") == deg.spec() and old.get("dataset") == data.name:
            res = old
        else:
            print(f"  {jpath.name} holds another configuration: it is replaced", flush=True)
    if res is None:
        res = {"methods": {}, "commands": []}
    budget = args.budget_label or (
        "reduced budget (CPU, not the protocol's default budget)"
        if args.size < 128 or args.iterations < 1200
        else "protocol budget"
    )
    res.update(
        title=f"{setting} ({deg.spec()}), {args.size}px, {args.iterations} iterations",
        budget_label=budget,
        dataset=data.name,
        source=str(src),
        modality=data.modality,
        class_names=data.class_names,
        train_slices=len(data.train),
        test_slices=len(data.test),
        test_ids=list(data.test.ids),
        test_groups=list(data.test.groups),
        degradation=deg.spec(),
        degradation_text=deg.describe(),
        config=config,
        vldun_preset_config=vldun_cfg,
        machine=machine(),
    )
    runner = Runner(data, deg, args)
    t_all = time.perf_counter()
    for m in methods:
        t = time.perf_counter()
        print(f"-- {m}", flush=True)
        r = runner.run(m)
        r["date"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        res["methods"][m] = r
        if m == "sequential" and r.get("rec_trained_here"):
            pass  # its restoration network is reported inside the sequential row
        summary = ", ".join(f"{k} {r[k]:.3f}" for k in ("psnr_mean", "ssim_mean", "dice_mean", "iou_mean") if k in r)
        print(f"   {m}: {summary} ({time.perf_counter() - t:.0f} s)", flush=True)
        _write(res, jpath, command, methods, t_all, partial=True)
    _write(res, jpath, command, methods, t_all, partial=False)
    print(f"results: {jpath.with_suffix('.md')}", flush=True)
    return jpath.with_suffix(".md")


def _write(res, jpath: Path, command: str, methods, t_all: float, partial: bool) -> None:
    entry = {
        "command": command,
        "methods": list(methods),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": time.perf_counter() - t_all,
        "complete": not partial,
    }
    cmds = [c for c in res["commands"] if not (c["command"] == command and not c.get("complete", True))]
    res["commands"] = cmds + [entry]
    _save(res, jpath)


def _save(res: dict[str, Any], jpath: Path) -> None:
    """Write a results dict as ``jpath`` (JSON) with its plot and markdown beside it."""
    png = jpath.with_suffix(".png")
    res["plot"] = png.name if plot(res, png) else None
    jpath.write_text(json.dumps(res, indent=1, default=float) + "\n")
    jpath.with_suffix(".md").write_text(render_markdown(res))


def _load_results(path: Path) -> dict[str, Any]:
    try:
        res = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"{path}: not a readable results JSON ({e})") from None
    if not isinstance(res, dict) or not {"config", "methods", "dataset"} <= res.keys():
        raise SystemExit(f"{path}: not a bench_quality results file (no config / methods / dataset)")
    return res


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.aggregate:
        out, *files = args.aggregate
        try:
            md = render_seed_summary([_load_results(Path(f)) for f in files], [Path(f).name for f in files])
        except ValueError as e:
            raise SystemExit(f"--aggregate: {e}") from None
        Path(out).write_text(md)
        print(f"wrote {out}")
        return 0
    if args.merge:
        out, *files = (Path(f) for f in args.merge)
        if out.suffix != ".json":
            raise SystemExit(f"--merge: the first path is the output and must end in .json, got {out}")
        try:
            res = merge_runs(
                [_load_results(f) for f in files],
                [f.name for f in files],
                args.budget_label or "merged runs (see the setup for each run's budget)",
            )
        except ValueError as e:
            raise SystemExit(f"--merge: {e}") from None
        _save(res, out)
        print(f"wrote {out.with_suffix('.md')}")
        return 0
    if args.render:
        jpath = Path(args.render)
        res = _load_results(jpath)
        if "test_groups" not in res and Path(res.get("source", "")).exists():  # results of an older version
            d = load_slices(res["source"], 8, preset=args.preset_data, modality=args.modality)
            if len(d.test) == res["test_slices"]:
                res["test_ids"], res["test_groups"] = list(d.test.ids), list(d.test.groups)
        _save(res, jpath)
        print(f"rendered {jpath.with_suffix('.md')}")
        return 0
    torch.set_num_threads(max(1, args.threads))
    methods = _expand_methods(args.methods)
    argv_list = list(sys.argv[1:] if argv is None else argv)
    command = "python benchmarks/bench_quality.py " + " ".join(shlex.quote(a) for a in argv_list)
    for entry in args.datasets:
        run_dataset(entry, methods, args, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
