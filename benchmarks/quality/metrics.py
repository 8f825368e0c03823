"""Metrics of the quality benchmark: PSNR/SSIM per slice (scikit-image conventions), Dice/IoU per class per slice
with the protocol's absent-class rules, ``summarize`` (per-slice and summary metrics of one method on the test set)
and ``_paired``, the mean A - B difference with its 95% interval clustered by patient, used by the claims.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["dice_iou_per_class", "psnr_ssim", "summarize"]


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
