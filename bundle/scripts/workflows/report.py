"""Visual evaluation report: PNG panels per case, the per-stage images of paper Fig. 14, and a metrics summary.

:class:`VisualReportHandler` is attached to an evaluator (``evaluate.json``; at the end of training the
``report#evaluator`` of ``train.json``, which evaluates the run's best checkpoint on the validation data). It looks
at the post-processed, decollated output of each iteration (keys ``image`` = degraded input, ``restored``,
``target`` = clean image, ``pred`` and ``label`` as label maps or one-hot, ``modality`` as an index) and

- writes ``<output_dir>/<modality>_<sample_id>.png`` for the first ``num_cases`` cases of each modality, one slice
  per case (the one with the most foreground): degraded input, restored, clean target, predicted and true labels,
  each image with its PSNR; when the network was built with ``stage_heads=True`` a second row shows the image of
  every unfolding stage (the network is run once more on that slice with ``return_stages``), and ``index.html``;
- computes PSNR / SSIM of the input and of the restored image and Dice per class on *every* slice
  (:func:`~scripts.workflows.summary.slice_metrics`) and, per modality, prints a one-screen table to the console
  and writes it as ``summary.md`` and ``summary.csv`` (paths printed).
"""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from .checkpoint import unwrap_module
from .distributed import is_main_process
from .summary import MetricsTable, slice_metrics

__all__ = ["VisualReportHandler", "render_panel", "psnr"]

logger = logging.getLogger(__name__)

# label colours (RGB, 0-1) for classes 1..; background is transparent
_COLOURS = np.array(
    [[0.9, 0.1, 0.1], [0.1, 0.8, 0.2], [0.2, 0.4, 1.0], [1.0, 0.8, 0.0], [0.8, 0.2, 0.9], [0.0, 0.9, 0.9]]
)


def _to_2d(x: Any, label: bool = False) -> np.ndarray | None:
    if x is None:
        return None
    a = np.asarray(torch.as_tensor(x).detach().cpu().float())
    if label and a.ndim >= 3 and a.shape[0] > 1:  # one-hot -> label map
        a = a.argmax(0)
    while a.ndim > 2:
        a = a[0] if a.shape[0] == 1 else a[a.shape[0] // 2]
    return a


def psnr(x: np.ndarray, ref: np.ndarray, data_range: float = 1.0) -> float:
    mse = float(np.mean((np.clip(x, 0, 1) - ref) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(data_range**2 / mse)


def _overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    g = np.clip(image, 0, 1)
    rgb = np.stack([g, g, g], axis=-1)
    lab = np.rint(label).astype(int)
    for c in range(1, int(lab.max()) + 1 if lab.size else 1):
        m = lab == c
        rgb[m] = (1 - alpha) * rgb[m] + alpha * _COLOURS[(c - 1) % len(_COLOURS)]
    return rgb


def render_panel(
    item: Mapping[str, Any],
    path: str | os.PathLike,
    title: str = "",
    stages: Sequence[Any] | None = None,
    stage_names: Sequence[str] | None = None,
) -> Path:
    """Write the panel PNG of one decollated output item to ``path``: degraded input, restored, clean, predicted
    and true labels; with ``stages`` (one image per unfolding stage) a second row of the stage images."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    img, rest, clean = _to_2d(item.get("image")), _to_2d(item.get("restored")), _to_2d(item.get("target"))
    pred, gt = _to_2d(item.get("pred"), label=True), _to_2d(item.get("label"), label=True)
    base = clean if clean is not None else img

    def quality(a: np.ndarray) -> str:
        return f"\nPSNR {psnr(a, clean):.2f} dB" if clean is not None else ""

    panels: list[tuple[str, np.ndarray, bool]] = []
    if img is not None:
        panels.append(("degraded input" + quality(img), img, False))
    if rest is not None:
        panels.append(("restored" + quality(rest), rest, False))
    if clean is not None:
        panels.append(("clean (target)", clean, False))
    if pred is not None and base is not None:
        panels.append(("predicted labels", _overlay(base, pred), True))
    if gt is not None and base is not None:
        panels.append(("true labels", _overlay(base, gt), True))
    if not panels:
        raise ValueError(f"nothing to draw: item keys {sorted(item)}")
    rows = [panels]
    if stages:
        names = list(stage_names or [])
        row = []
        for k, st in enumerate(stages):
            a = _to_2d(st)
            name = f" ({names[k]})" if k < len(names) else ""
            row.append((f"stage {k + 1}{name}" + quality(a), a, False))
        rows.append(row)
    cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.6 * cols, 3.0 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(row):
                continue
            t, a, rgb = row[c]
            shown = a if rgb else np.clip(a, 0, 1)
            ax.imshow(shown, cmap=None if rgb else "gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(t, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _modality_name(value: Any, modalities: Sequence[str] | None) -> str:
    if value is None:
        return "all"
    if isinstance(value, str):
        return value
    try:
        idx = int(torch.as_tensor(value).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return str(value)
    return modalities[idx] if modalities and 0 <= idx < len(modalities) else f"modality{idx}"


def _cpu(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in item.items()}


class VisualReportHandler:
    """Panels and metrics summary of an evaluation (rank 0 writes; see the module docstring).

    Args:
        output_dir: folder of the PNGs, ``index.html``, ``summary.md`` and ``summary.csv``.
        num_cases: cases (volumes / images) drawn per modality, one slice each.
        label_key: the label used to prefer foreground slices.
        class_names: names of the classes 0..K-1 (background first) for the Dice columns.
        modalities: names of the modality indices (``modalities`` of the configs).
        weights: evaluate these weights (``model.pt``) when their record (``model.pt.json``) says that the run in
            ``run_dir`` wrote them (the best checkpoint of this training run); otherwise the network's weights
            are kept (the final weights of the run) and the report says so. ``None``: keep the network as it is
            (``evaluate.json`` loads the checkpoint itself).
        run_dir: this run's folder (compared with the record's ``run_dir``).
        stages: draw the per-stage images when the network has stage heads.
        title: heading of the summary.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        num_cases: int = 4,
        label_key: str = "label",
        class_names: Sequence[str] | None = None,
        modalities: Sequence[str] | None = None,
        weights: str | os.PathLike | None = None,
        run_dir: str | os.PathLike | None = None,
        stages: bool = True,
        title: str = "VL-DUN evaluation",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.num_cases = int(num_cases)
        self.label_key = label_key
        self.class_names = list(class_names) if class_names else None
        self.modalities = list(modalities) if modalities else None
        self.weights = None if weights is None else Path(weights)
        self.run_dir = None if run_dir is None else str(run_dir)
        self.stages = bool(stages)
        self.title = title
        self._best: dict[tuple[str, str], tuple[float, dict, dict]] = {}
        self.table = MetricsTable(self.class_names)
        self.notes: list[str] = []
        self.written: list[Path] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._load_weights)
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _load_weights(self, engine: Engine) -> None:
        if self.weights is None:
            return
        import json

        record_path = self.weights.with_name(self.weights.name + ".json")
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
        if self.weights.is_file() and self.run_dir and record.get("run_dir") == self.run_dir:
            state = torch.load(self.weights, map_location="cpu", weights_only=True)
            unwrap_module(engine.network).load_state_dict(state)
            value = record.get("value")
            shown = f"{record.get('metric')} {value:.4f}" if isinstance(value, (int, float)) else "no validation metric"
            self.notes.append(
                f"weights: best checkpoint of this run, {self.weights} (epoch {record.get('epoch')}, {shown})"
            )
        else:
            self.notes.append(f"weights: the final weights of the run ({self.weights} was not written by this run)")

    def _reset(self, engine: Engine) -> None:
        self._best = {}
        self.table = MetricsTable(self.class_names)

    @staticmethod
    def _case(item: Mapping) -> tuple[str, str]:
        sid = str(item.get("sample_id") or "case")
        case = sid.rsplit("_s", 1)[0] if "_s" in sid else sid
        return case, sid

    def _collect(self, engine: Engine) -> None:
        out = engine.state.output
        items = out if isinstance(out, list) else [out]
        batch = engine.state.batch if isinstance(engine.state.batch, list) else [engine.state.batch] * len(items)
        for item, b in zip(items, batch):
            if not isinstance(item, Mapping):
                continue
            merged = dict(item)
            if isinstance(b, Mapping):
                for key in ("sample_id", "modality"):
                    if key in b:
                        merged.setdefault(key, b[key])
            modality = _modality_name(merged.get("modality"), self.modalities)
            case, sid = self._case(merged)
            pred = merged.get("pred")
            num_classes = int(torch.as_tensor(pred).shape[0]) if pred is not None else None
            self.table.add(
                modality, sid, slice_metrics(merged, num_classes if num_classes and num_classes > 1 else None)
            )
            key = (modality, case)
            if key not in self._best and sum(m == modality for m, _ in self._best) >= self.num_cases:
                continue
            lab = _to_2d(merged.get(self.label_key), label=True)
            score = float((lab > 0).sum()) if lab is not None else 0.0
            if key not in self._best or score > self._best[key][0]:
                keep = {k: merged.get(k) for k in ("image", "restored", "target", "pred", "label", "sample_id")}
                raw = _cpu(b) if isinstance(b, Mapping) else {}
                self._best[key] = (score, _cpu(keep), raw)

    def _stage_images(self, engine: Engine, raw: Mapping[str, Any]) -> tuple[list | None, list[str]]:
        """Run the network once more on one slice with ``return_stages`` (through the evaluator's own batch
        preparation and inferer, so that it sees exactly what the evaluation saw)."""
        net = getattr(engine, "network", None)  # a report of precomputed outputs has no network to ask
        net = None if net is None else unwrap_module(net)
        if not (self.stages and raw and getattr(net, "has_stage_heads", False) and hasattr(net, "return_stages")):
            return None, []
        from monai.data import list_data_collate

        prepared = engine.prepare_batch(
            list_data_collate([dict(raw)]), engine.state.device, engine.non_blocking, **getattr(engine, "to_kwargs", {})
        )
        inputs, args, kwargs = prepared[0], (), {}
        if len(prepared) == 4:
            args, kwargs = tuple(prepared[2]), dict(prepared[3])
        old_stages, old_output, was_training = net.return_stages, getattr(net, "output", None), net.training
        net.return_stages = True
        if old_output is not None:
            net.output = "dict"
        net.eval()
        try:
            with torch.no_grad():
                out = engine.inferer(inputs, net, *args, **kwargs)
        finally:
            net.return_stages = old_stages
            if old_output is not None:
                net.output = old_output
            net.train(was_training)
        stages = out.get("stages") if isinstance(out, Mapping) else None
        names = list(net.stages.keys()) if isinstance(getattr(net, "stages", None), torch.nn.ModuleDict) else []
        return ([s[0].detach().float().cpu() for s in stages] if stages else None), names

    def _write(self, engine: Engine) -> None:
        if not is_main_process():
            return
        rows = []
        for (modality, _case), (_score, item, raw) in sorted(self._best.items()):
            _, sid = self._case(item)
            stages, names = self._stage_images(engine, raw)
            name = f"{modality}_{sid}" if modality != "all" else sid
            path = render_panel(
                item, self.output_dir / f"{name}.png", title=f"{modality}: {sid}", stages=stages, stage_names=names
            )
            self.written.append(path)
            rows.append(f'<h3>{html.escape(modality)}: {html.escape(sid)}</h3><img src="{html.escape(path.name)}">')
        if rows:
            (self.output_dir / "index.html").write_text(
                f"<html><body><h2>{html.escape(self.title)}: degraded | restored | clean | predicted | true labels"
                " (second row: per-stage images)</h2>\n" + "\n".join(rows) + "\n</body></html>\n"
            )
        if not self.table.rows:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        md = self.output_dir / "summary.md"
        md.write_text(self.table.markdown(self.title, self.notes))
        csv_path = self.table.write_csv(self.output_dir / "summary.csv")
        # print, not log: this table is the report a person reads at the end of the run, whatever the log level
        lines = [f"== {self.title} ({len(self.table.rows)} slices) ==", *self.notes, self.table.console()]
        lines.append(f"panels: {len(rows)} PNG in {self.output_dir} (index.html); summary: {md}, {csv_path}")
        print("\n".join(lines), flush=True)
