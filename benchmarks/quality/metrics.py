"""Metrics of the quality benchmark: PSNR/SSIM per slice (scikit-image conventions), Dice/IoU per class per slice
with the protocol's absent-class rules, ``summarize`` (per-slice and summary metrics of one method on the test set)
and ``_paired``, the mean A - B difference with its 95% interval clustered by patient, used by the claims, and
``_paired_over_seeds``, the same over several training runs with the seed as a second random effect.
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


def _differences_by_patient(a: Sequence, b: Sequence, groups: Sequence[str] | None) -> dict[str, list[float]]:
    """The finite per-slice differences A − B, by patient (without ``groups``, each slice is its own patient)."""
    groups = list(groups) if groups is not None and len(groups) == len(a) else [str(i) for i in range(len(a))]
    by: dict[str, list[float]] = {}
    for x, y, g in zip(a, b, groups):
        if x is not None and y is not None and np.isfinite(x) and np.isfinite(y):
            by.setdefault(g, []).append(x - y)
    return by


def _paired(a: Sequence, b: Sequence, groups: Sequence[str] | None = None) -> tuple[float, float, int, int] | None:
    """Mean of A − B and the half-width of its 95% interval: (mean, half, n_groups, n_slices).

    With ``groups`` (the patient of each test slice) the differences are first averaged per patient and the interval
    is ``t(0.975, G − 1) · sd / sqrt(G)`` over the G patients (slices of one patient are not independent);
    without, each slice is its own group.
    """
    from scipy.stats import t as student_t

    by = _differences_by_patient(a, b, groups)
    n = sum(len(v) for v in by.values())
    d = np.array([np.mean(v) for v in by.values()])
    if d.size < 2:
        return None
    half = float(student_t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    return float(d.mean()), half, int(d.size), n


def _paired_over_seeds(
    runs: Sequence[tuple[Sequence, Sequence, Sequence[str] | None]],
) -> tuple[float, float, int, int] | None:
    """Mean of A − B over training seeds and patients, and the half-width of its 95% interval with *both* random:
    (mean, half, n_seeds, n_patients).

    ``runs`` holds one ``(a, b, groups)`` per training seed, on the same test patients. Per seed the differences
    are averaged per patient (as in ``_paired``), giving a seeds × patients table ``d[s, g] = μ + α_s + β_g + ε``.
    A per-seed interval sees only the patients; the spread of the training runs (α) is what decides whether a
    difference carries over to the next run, so the variance of the grand mean is taken from the two-way ANOVA of
    that table, ``(σ²_α·G + σ²_β·S + σ²_ε) / (S·G)`` with each component from its mean square (negative estimates
    set to 0), and the interval uses Satterthwaite's degrees of freedom. With no seed effect this is the patient
    interval of the seed-averaged differences; with no patient effect, the t interval over the seed means.
    Only patients present in every seed count; ``None`` with fewer than 2 seeds or 2 patients.
    """
    from scipy.stats import t as student_t

    per_seed = [{k: float(np.mean(v)) for k, v in _differences_by_patient(a, b, g).items()} for a, b, g in runs]
    if len(per_seed) < 2:
        return None
    common = sorted(set.intersection(*(set(p) for p in per_seed)))
    if len(common) < 2:
        return None
    d = np.array([[p[g] for g in common] for p in per_seed])
    s, g = d.shape
    grand = d.mean()
    seed_means, patient_means = d.mean(axis=1), d.mean(axis=0)
    ms_seed = g * float(np.sum((seed_means - grand) ** 2)) / (s - 1)
    ms_patient = s * float(np.sum((patient_means - grand) ** 2)) / (g - 1)
    resid = d - seed_means[:, None] - patient_means[None, :] + grand
    df_resid = (s - 1) * (g - 1)
    ms_resid = float(np.sum(resid**2)) / df_resid
    # the variance of the grand mean times S·G, (MS_seed − MS_ε) + (MS_patient − MS_ε) + MS_ε, as coefficients of the
    # three mean squares; a component whose estimate would be negative is 0, which drops its two terms
    coef = {"resid": 1.0, "seed": 0.0, "patient": 0.0}
    for name, ms in (("seed", ms_seed), ("patient", ms_patient)):
        if ms > ms_resid:
            coef[name], coef["resid"] = 1.0, coef["resid"] - 1.0
    squares = {"resid": (ms_resid, df_resid), "seed": (ms_seed, s - 1), "patient": (ms_patient, g - 1)}
    total = sum(c * squares[k][0] for k, c in coef.items())
    if total <= 0:
        return float(grand), 0.0, s, g
    dof = total**2 / sum((c * squares[k][0]) ** 2 / squares[k][1] for k, c in coef.items() if c)
    half = float(student_t.ppf(0.975, dof) * math.sqrt(total / (s * g)))
    return float(grand), half, s, g
