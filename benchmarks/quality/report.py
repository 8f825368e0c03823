"""Reporting of the quality benchmark: the machine and code record (``machine``), the table formatting helpers, the
paper's claims checked by paired differences (``CLAIMS``), the markdown of one run (``render_markdown``), the
summary over training seeds (``render_seed_summary``), the merge of runs with different budgets (``merge_runs``)
and the bar plot (``plot``).
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._machine import cpu_name
from benchmarks.quality.methods import METHOD_LABELS, METHODS
from benchmarks.quality.metrics import _paired

__all__ = ["CLAIMS", "dice_gap_closed", "machine", "plot", "render_markdown"]

_REPO = Path(__file__).resolve().parents[2]


def machine(device: str = "cpu") -> dict[str, Any]:
    """The machine and code record of a run; ``gpu``: the name of the CUDA device the run uses (``None`` on cpu)."""
    cpu = cpu_name()
    import subprocess

    import monai

    def _git(*cmd: str) -> str:
        try:
            out = subprocess.run(["git", *cmd], cwd=_REPO, capture_output=True, text=True, timeout=20)
            return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(
        _git("status", "--porcelain", "--", "bundle/scripts", "benchmarks/bench_quality.py", "benchmarks/quality")
    )
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
        "gpu": torch.cuda.get_device_name(torch.device(device)) if torch.device(device).type == "cuda" else None,
    }


def _claim_values(methods: Mapping[str, Any], a: str, b: str, key: str) -> tuple[Sequence, Sequence] | None:
    """The per-slice ``key`` values of methods A and B for a paired claim; ``None`` where either is missing."""
    if a in methods and b in methods and key in methods[a] and key in methods[b]:
        return methods[a][key], methods[b][key]
    return None


def _difference_text(p: tuple[float, float, int, int] | None, unit: str = "") -> str:
    """A ``_paired`` difference as ``mean ± half-width`` (``–`` for none)."""
    return "–" if p is None else f"{p[0]:+.3f} ± {p[1]:.3f}{unit}"


def _fmt(m: float, s: float, digits: int) -> str:
    if m is None or not np.isfinite(m):
        return "–"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def _params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n else "–"


def _ordered(methods: Mapping[str, Any]) -> list[str]:
    return [m for m in METHODS if m in methods] + sorted(m for m in methods if m not in METHODS)


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
    ("known-operator DC helps (PSNR)", "vldun_dc", "vldun", "psnr"),
    ("known-operator DC keeps Dice", "vldun_dc", "vldun", "dice_per_slice"),
    ("DC VL-DUN vs VarNet (PSNR)", "vldun_dc", "varnet", "psnr"),
    ("DC joint vs separate (Dice)", "vldun_dc", "sequential", "dice_per_slice"),
    ("DC joint vs separate (PSNR)", "vldun_dc", "rec_unet", "psnr"),
    ("DC joint vs seg-only on degraded input (Dice)", "vldun_dc", "seg_unet_degraded", "dice_per_slice"),
    ("joint restores above its input (PSNR)", "vldun", "zero_filled", "psnr"),
    ("DC joint restores above its input (PSNR)", "vldun_dc", "zero_filled", "psnr"),
)


def dice_gap_closed(methods: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Per segmenting method, the fraction of the Dice gap between the segmentation UNets on the degraded and on the
    clean input that the method closes: ``(Dice - degraded) / (clean - degraded)`` on the test-set means (1: as good
    as segmenting clean images, 0: no better than segmenting the degraded ones). Empty without both UNets or when
    the clean one is not ahead (no gap to close)."""
    deg, clean = methods.get("seg_unet_degraded", {}), methods.get("seg_unet_clean", {})
    if "dice_mean" not in deg or "dice_mean" not in clean or clean["dice_mean"] <= deg["dice_mean"]:
        return {}
    base, gap = deg["dice_mean"], clean["dice_mean"] - deg["dice_mean"]
    refs = {"seg_unet_degraded", "seg_unet_clean"}
    return {m: (r["dice_mean"] - base) / gap for m, r in methods.items() if "dice_mean" in r and m not in refs}


#: what the gap-closed tables say about the reference: a gap of a few hundredths is within the test-set noise
GAP_NOTE = (
    "Fraction of the Dice gap between the segmentation UNets on the degraded and on the clean input that each method "
    "closes, `(Dice − degraded) / (clean − degraded)` on the test-set means (1: as good as segmenting clean images; "
    "negative: below the UNet on the degraded input). With a gap of a few hundredths the fraction is dominated by "
    "the noise of either UNet."
)


def _recipe_text(cfg: Mapping[str, Any]) -> str:
    r = cfg.get("recipe")
    if not r:  # results written before the benchmark trained with the bundle's recipe
        return f"AdamW lr {cfg['lr']} (constant), the benchmark's own training loop"
    sets = ", ".join(f"{k}={v}" for k, v in r.get("overrides", {}).items() if k != "preset")
    return (
        f"the bundle's recipe (`{r['config']}`{' with ' + sets if sets else ''}: VLDUNTrainer, "
        f"{r['optimizer'].rsplit('.', 1)[-1]} lr {r['learning_rate']} weight decay {r['weight_decay']}, "
        f"{r['lr_scheduler'].rsplit('.', 1)[-1]} with {r['warmup_epochs']}/{r['epochs']} of the iterations as "
        f"warm-up from ×{r['warmup_start_factor']}, for every learned method)"
    )


def _loss_text(cfg: Mapping[str, Any]) -> str:
    r = cfg.get("recipe")
    if not r:
        lp = cfg.get("lambda_prior")
        return f"VLDUNLoss (L1 + Dice-CE + {lp}·focal(modality) + {lp}·CE(degradation)); UNets: L1 or Dice-CE"
    rec = f"{r['lambda_rec']}·{r['rec_loss'].upper()}"
    if r.get("ssim_weight"):
        rec = f"{r['lambda_rec']}·({r['rec_loss'].upper()} + {r['ssim_weight']}·(1 − SSIM))"
    if r.get("task_balance", "fixed") != "fixed":
        rec = f"{rec} × {r['task_balance']} multiplier"
    dice = "Dice-CE" + (f" {json.dumps(r['dice_ce_kwargs'])}" if r.get("dice_ce_kwargs") else "")
    return (
        f"VLDUNLoss {rec} + {r['lambda_seg']}·{dice} (+ {r['lambda_mod']}·focal(modality) + "
        f"{r['lambda_deg']}·CE(degradation) when the data show more than one class: off here), "
        f"CLIP similarity {r.get('clip_similarity')}; the UNets train with the same loss (their own terms)"
        + (f"; gradients clipped to global norm {r['grad_clip_norm']}" if r.get("grad_clip_norm") else "")
        + (
            f"; dropout {r['seg_unet_dropout']} in every segmentation UNet (the baselines' and VL-DUN's UNet head)"
            if r.get("seg_unet_dropout")
            else ""
        )
        + _dc_text(r)
    )


def _dc_text(r: Mapping[str, Any]) -> str:
    """The known-operator settings of ``vldun_dc`` (recorded since 2026-12-02)."""
    if "dc_cascades" not in r:
        return ""
    features = r.get("dc_cascade_features") or (r.get("overrides") or {}).get("dc_cascade_features")
    widths = f" (BasicUNet features {list(features)})" if features else ""
    return (
        f"; `vldun_dc`: {r.get('dc_projection')} projection, {r['dc_cascades']} VarNet-style cascades{widths}, "
        f"seg head reading the consistent image {'on' if r.get('dc_to_seg') else 'off'}, measurement dropout "
        f"{r.get('measurement_dropout')}, "
        + (
            f"{r['lambda_pre_dc']}·{str(r.get('rec_loss', 'mse')).upper()} on the rec head's estimate before the "
            "projection"
            if r.get("lambda_pre_dc")
            else "no loss on the rec head's estimate before the projection"  # files before 2026-12-06 too
        )
    )


def _merged_source_line(src: Mapping[str, Any]) -> str:
    """The setup line of one run a merged table was made from (an entry of ``merged_from``)."""
    return (
        f"- merged by `--merge` from `{src['file']}`: {', '.join(src['methods'])}; {src['iterations']} iterations"
        + (f", capped at {src['time_budget']:.0f} s" if src.get("time_budget") else "")
        + f", git `{src.get('git_commit')}`"
        + (f", on {src['device']}" if src.get("device", "cpu") != "cpu" else "")
        + (
            "; its VL-DUN rows were trained with "
            + ", ".join(f"{k}={v!r}" for k, v in src["vldun_settings"].items())
            + " (the setup above states the values of the `vldun_dc` row)"
            if src.get("vldun_settings")
            else ""
        )
    )


def _blind_mode_lines(
    methods: Mapping[str, Mapping[str, Any]], names: Sequence[str], groups: Sequence[Any] | None
) -> list[str]:
    """The known-operator networks evaluated again without k-space and mask (their ``blind`` record), paired against
    their own measured-mode outputs and against the blind network trained without measurements (``vldun``)."""
    rows = [m for m in _ordered(methods) if methods[m].get("blind")]
    if not rows:
        return []
    lines = [
        "",
        "### The same weights without the measurements (blind mode)",
        "",
        "Each known-operator network run again on the same test inputs with no `kspace` / `mask`, as a user with "
        "images only would run it; paired differences as in the claims below (95 % interval over patients).",
        "",
        "| method | PSNR (dB) | SSIM | mean Dice | " + " | ".join(names) + " | blind − measured: PSNR; Dice | "
        "blind − `vldun`: PSNR; Dice |",
        "|---|---|---|---|" + "---|" * len(names) + "---|---|",
    ]

    def paired(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
        cells = []
        for key, unit in (("psnr", " dB"), ("dice_per_slice", "")):
            p = _paired(a[key], b[key], groups) if key in a and key in b else None
            cells.append(_difference_text(p, unit))
        return "; ".join(cells)

    for m in rows:
        b = methods[m]["blind"]
        per_class = [_fmt(mu, sd, 3) for mu, sd, _ in b.get("dice_class", [])] or ["–"] * len(names)
        vs_blind_net = paired(b, methods["vldun"]) if "vldun" in methods else "–"
        lines.append(
            f"| `{m}` | {_fmt(b.get('psnr_mean'), b.get('psnr_std'), 2)} | "
            f"{_fmt(b.get('ssim_mean'), b.get('ssim_std'), 3)} | {_fmt(b.get('dice_mean'), b.get('dice_std'), 3)} | "
            + " | ".join(per_class)
            + f" | {paired(b, methods[m])} | {vs_blind_net} |"
        )
    return lines


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
        f"- size {cfg['size']}×{cfg['size']}, batch {cfg['batch_size']}, {_recipe_text(cfg)}, random flips, "
        + (
            "iterations per learned method as in the table's *iterations* column (runs merged below)"
            if res.get("merged_from")
            else f"{cfg['iterations']} iterations per learned method"
            + (f" (capped at {cfg['time_budget']} s)" if cfg.get("time_budget") else "")
        )
        + f", last iterate; UNets: MONAI BasicUNet features {tuple(cfg['unet_features'])}; VL-DUN preset "
        f"`{cfg['preset']}`, {_loss_text(cfg)}; CLIP randomly initialised (no pretrained weights available)",
        *(
            [
                "- **evaluated on the validation part** (every 5th training patient held out; used to choose "
                "settings, never the test patients)"
            ]
            if cfg.get("split") == "validation"
            else []
        ),
        *(_merged_source_line(src) for src in res.get("merged_from", ())),
        f"- code: git `{res['machine'].get('git_commit', 'not recorded')}`; VL-DUN preset `{cfg['preset']}` = "
        f"`{json.dumps(res.get('vldun_preset_config', 'not recorded'))}`",
        f"- threads: torch.set_num_threads({cfg['threads']}); machine: {res['machine']['cpu']} "
        f"({res['machine']['cpu_count']} logical CPUs, shared with other jobs), {res['machine']['platform']}, "
        f"torch {res['machine']['torch']}, MONAI {res['machine']['monai']}"
        + (
            f"; trained and evaluated on {cfg['device']} ({res['machine'].get('gpu') or 'no GPU name recorded'}, "
            "float32: GPU kernels are not bit-reproducible, seconds per iteration are not comparable with CPU rows)"
            if cfg.get("device", "cpu") != "cpu"
            else ""
        ),
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
    lines += _blind_mode_lines(methods, names, res.get("test_groups"))
    prior = [m for m in _ordered(methods) if "modality_accuracy" in methods[m]]
    if prior:
        lines += ["", "CLIP prior heads on the test inputs (one modality and one degradation class in this set): "]
        lines[-1] += "; ".join(
            f"`{m}` modality acc {methods[m]['modality_accuracy']:.2f}, degradation acc "
            f"{methods[m]['degradation_accuracy']:.2f}"
            for m in prior
        )
    probes = [m for m in _ordered(methods) if methods[m].get("grad_probe")]
    if probes:
        lines += [
            "",
            "## Task gradients on the shared trunk",
            "",
            "Norm of each weighted loss term's gradient on the parameters both heads share (all but the rec head, "
            "the seg head and the CLIP prior), on the batch of that iteration (`--grad-probe`).",
            "",
            "| method | iteration | restoration weight | restoration | segmentation | ratio rec / seg |",
            "|---|---|---|---|---|---|",
        ]
        for m in probes:
            for r in methods[m]["grad_probe"]:
                rec, seg = r.get("rec"), r.get("seg")
                ratio = f"{rec / seg:.2f}" if rec is not None and seg else "–"
                cells = [f"{v:.4f}" if v is not None else "–" for v in (rec, seg)]
                w = r.get("rec_weight")
                wt = f"{w:.3g}" if w is not None else "–"
                lines.append(f"| `{m}` | {r['iteration']} | {wt} | {cells[0]} | {cells[1]} | {ratio} |")
    claims = []
    for text, a, b, key in CLAIMS:
        values = _claim_values(methods, a, b, key)
        p = None if values is None else _paired(*values, res.get("test_groups"))
        if p is not None:
            unit = " dB" if key == "psnr" else ""
            verdict = "A > B" if p[0] - p[1] > 0 else "A < B" if p[0] + p[1] < 0 else "undecided"
            claims.append(f"| {text} | `{a}` | `{b}` | {_difference_text(p, unit)} | {p[2]} / {p[3]} | {verdict} |")
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
    closed = dice_gap_closed(methods)
    if closed:
        deg, clean = methods["seg_unet_degraded"]["dice_mean"], methods["seg_unet_clean"]["dice_mean"]
        lines += ["", "## Dice gap closed", "", GAP_NOTE + f" Here: degraded {deg:.3f}, clean {clean:.3f}.", ""]
        lines += ["| method | gap closed |", "|---|---|", *(f"| `{m}` | {v:+.0%} |" for m, v in closed.items())]
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
