"""Metric tables of an evaluation: per-slice quality, per-modality summary (console, Markdown, CSV), labelled CSVs.

- :func:`slice_metrics`: PSNR and SSIM of the degraded input and of the restored image against the clean target
  (normalised scale, data range 1, as the evaluation metrics) and Dice per foreground class, for one decollated
  output item, with MONAI's metric functions.
- :class:`MetricsTable`: collects those rows and summarises them per modality (mean over slices; a class absent
  from a slice's ground truth does not count for that class); writes ``summary.md`` / ``summary.csv`` and the
  one-screen console table.
- :class:`LabelledMetricsSaver`: MONAI's ``MetricsSaver`` whose ``metrics.csv`` has a ``metric,value`` header and
  whose per-class columns are named after ``class_names`` (MONAI writes ``class0..`` for the foreground classes
  1.., which read as if they included the background).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import MetricsSaver
from monai.metrics import PSNRMetric, SSIMMetric, compute_dice

from .distributed import is_main_process

__all__ = ["DEFAULT_CLASS_NAMES", "slice_metrics", "MetricsTable", "LabelledMetricsSaver", "class_columns"]

#: the demo's classes: ACDC's for the MRI phantoms, heart / lung / lesion for the CT ones (scripts/data/demo.py)
DEFAULT_CLASS_NAMES: tuple[str, ...] = ("background", "RV/heart", "myocardium/lung", "LV/lesion")
_SSIM_WINDOW = 11


def class_columns(num_foreground: int, class_names: Sequence[str] | None) -> list[str]:
    """Names of the foreground classes 1..``num_foreground`` (``class_names`` includes the background)."""
    names = list(class_names or [])
    if len(names) != num_foreground + 1:
        return [f"class{c}" for c in range(1, num_foreground + 1)]
    return names[1:]


def _one_hot(x: torch.Tensor, num_classes: int) -> torch.Tensor:
    x = torch.as_tensor(x).detach().cpu().float()
    if x.shape[0] > 1:
        return x
    lab = x[0].round().long().clamp(0, num_classes - 1)
    return torch.nn.functional.one_hot(lab, num_classes).movedim(-1, 0).float()


def slice_metrics(item: Mapping[str, Any], num_classes: int | None = None) -> dict[str, float]:
    """``psnr_input``, ``psnr``, ``ssim_input``, ``ssim`` and ``dice_<c>`` (c = 1..) of one decollated item; keys
    whose inputs are missing are left out, a class absent from the ground truth is NaN."""
    out: dict[str, float] = {}
    target = item.get("target")
    if target is not None:
        t = torch.as_tensor(target).detach().cpu().float()[None]
        small = min(t.shape[2:]) < _SSIM_WINDOW
        for key, name in (("image", "input"), ("restored", "")):
            x = item.get(key)
            if x is None:
                continue
            x = torch.as_tensor(x).detach().cpu().float()[None].clamp(0.0, 1.0)
            suffix = f"_{name}" if name else ""
            out[f"psnr{suffix}"] = float(PSNRMetric(max_val=1.0)(x, t).reshape(-1)[0])
            if not small:
                out[f"ssim{suffix}"] = float(SSIMMetric(spatial_dims=x.ndim - 2, data_range=1.0)(x, t).reshape(-1)[0])
    pred, label = item.get("pred"), item.get("label")
    if pred is not None and label is not None:
        k = num_classes or max(int(torch.as_tensor(pred).shape[0]), int(torch.as_tensor(label).shape[0]), 2)
        dice = compute_dice(_one_hot(pred, k)[None], _one_hot(label, k)[None], include_background=False)
        for c, v in enumerate(dice.reshape(-1).tolist(), start=1):
            out[f"dice_{c}"] = float(v)
    return out


def _fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


class MetricsTable:
    """Per-slice metric rows (:func:`slice_metrics`) grouped by modality.

    Args:
        class_names: names of the classes 0..K-1 (background first); other lengths give ``class1..``.
    """

    def __init__(self, class_names: Sequence[str] | None = None) -> None:
        self.class_names = list(class_names) if class_names else None
        self.rows: list[tuple[str, str, dict[str, float]]] = []

    def add(self, modality: str, sample_id: str, metrics: Mapping[str, float]) -> None:
        self.rows.append((str(modality), str(sample_id), dict(metrics)))

    def _num_fg(self) -> int:
        return max((sum(k.startswith("dice_") for k in m) for _, _, m in self.rows), default=0)

    def summary(self) -> dict[str, dict[str, Any]]:
        """``{modality: {"slices": n, "psnr_input": mean, ..., "dice": {class name: mean}, "mean_dice": ...}}``,
        with ``"all"`` over every slice when there is more than one modality."""
        groups: dict[str, list[dict[str, float]]] = {}
        for modality, _, m in self.rows:
            groups.setdefault(modality, []).append(m)
        if len(groups) > 1:
            groups["all"] = [m for _, _, m in self.rows]
        names = class_columns(self._num_fg(), self.class_names)
        out: dict[str, dict[str, Any]] = {}
        for modality, rows in groups.items():
            entry: dict[str, Any] = {"slices": len(rows)}
            for key in ("psnr_input", "psnr", "ssim_input", "ssim"):
                vals = [r[key] for r in rows if key in r and math.isfinite(r[key])]
                entry[key] = float(np.mean(vals)) if vals else None
            dice = {}
            for c, name in enumerate(names, start=1):
                vals = [r[f"dice_{c}"] for r in rows if not math.isnan(r.get(f"dice_{c}", math.nan))]
                dice[name] = float(np.mean(vals)) if vals else None
            entry["dice"] = dice
            present = [v for v in dice.values() if v is not None]
            entry["mean_dice"] = float(np.mean(present)) if present else None
            out[modality] = entry
        return out

    def _table(self) -> tuple[list[str], list[list[str]]]:
        summary = self.summary()
        names = class_columns(self._num_fg(), self.class_names)
        head = ["modality", "slices", "PSNR input -> restored (dB)", "SSIM input -> restored"]
        head += [f"Dice {n}" for n in names] + ["mean Dice"]
        body = []
        for modality, e in summary.items():
            row = [modality, str(e["slices"])]
            row.append(f"{_fmt(e['psnr_input'])} -> {_fmt(e['psnr'])}")
            row.append(f"{_fmt(e['ssim_input'], 3)} -> {_fmt(e['ssim'], 3)}")
            row += [_fmt(e["dice"][n], 3) for n in names] + [_fmt(e["mean_dice"], 3)]
            body.append(row)
        return head, body

    def console(self) -> str:
        head, body = self._table()
        widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *body]]
        return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])

    def markdown(self, title: str = "VL-DUN evaluation", notes: Sequence[str] = ()) -> str:
        head, body = self._table()
        lines = [f"# {title}", ""] + [f"{n}  " for n in notes] + ([""] if notes else [])
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join("---" for _ in head) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines) + "\n"

    def write_csv(self, path: str | os.PathLike) -> Path:
        """One row per modality: slices, the four image metrics, Dice per class and mean Dice (empty = no data)."""
        summary = self.summary()
        names = class_columns(self._num_fg(), self.class_names)
        buf = io.StringIO()
        w = csv.writer(buf)
        keys = ["psnr_input", "psnr", "ssim_input", "ssim"]
        w.writerow(["modality", "slices", *keys, *[f"dice_{n}" for n in names], "mean_dice"])
        for modality, e in summary.items():
            vals = [e[k] for k in keys] + [e["dice"][n] for n in names] + [e["mean_dice"]]
            w.writerow([modality, e["slices"], *["" if v is None else f"{v:.6g}" for v in vals]])
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(buf.getvalue())
        return path


def _is_class_cell(cell: str) -> bool:
    return cell.startswith("class") and cell[5:].isdigit()


def _rewrite(path: Path, fn) -> None:
    if not path.is_file():
        return
    path.write_text(fn(path.read_text()))


class LabelledMetricsSaver(MetricsSaver):
    """``MetricsSaver`` (same arguments) plus ``class_names`` (background first) and ``include_background``: after
    MONAI writes the files, ``metrics.csv`` gets a ``metric,value`` header and the ``class<i>`` columns of the
    per-slice and summary files are renamed to the class names (``class0`` is class 1 when the metrics exclude
    the background, as this bundle's Dice and IoU do)."""

    def __init__(
        self,
        *args: Any,
        class_names: Sequence[str] | None = None,
        include_background: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.class_names = list(class_names) if class_names else None
        self.include_background = include_background

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._label)

    def _names(self, count: int) -> list[str] | None:
        """The class names of ``count`` per-class columns, or ``None`` when they are not per-class (PSNR and SSIM
        have one column, the image channel)."""
        if not self.class_names:
            return None
        names = self.class_names if self.include_background else self.class_names[1:]
        return names if count == len(names) else None

    def _relabel_raw(self, text: str) -> str:
        lines = text.splitlines(keepends=True)
        if not lines:
            return text
        cells = lines[0].rstrip("\n").split(self.deli)
        idx = [i for i, c in enumerate(cells) if _is_class_cell(c)]
        names = self._names(len(idx))
        if names is None:
            return text
        for i, name in zip(idx, names):
            cells[i] = name
        return self.deli.join(cells) + "\n" + "".join(lines[1:])

    def _relabel_summary(self, text: str) -> str:
        lines = text.splitlines(keepends=True)
        rows = [i for i, ln in enumerate(lines[1:], 1) if _is_class_cell(ln.split(self.deli)[0])]
        names = self._names(len(rows))
        if names is None:
            return text
        for i, name in zip(rows, names):
            lines[i] = name + lines[i][len(lines[i].split(self.deli)[0]) :]
        return "".join(lines)

    def _label(self, engine: Engine) -> None:
        if not is_main_process():
            return
        root = Path(self.save_dir)
        header = f"metric{self.deli}value\n"
        if self.metrics:
            _rewrite(root / "metrics.csv", lambda t: t if t.startswith(header) else header + t)
        for path in root.glob("*_raw.csv"):
            _rewrite(path, self._relabel_raw)
        for path in root.glob("*_summary.csv"):
            _rewrite(path, self._relabel_summary)
