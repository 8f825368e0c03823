"""Visual evaluation report: one PNG panel per case (degraded input, restored, clean, predicted mask, ground truth).

:class:`VisualReportHandler` is attached to the evaluator (``evaluate.json``). It looks at the post-processed,
decollated output of each iteration (keys ``image`` = degraded input, ``restored``, ``target`` = clean image,
``pred`` and ``label`` as label maps or one-hot) and writes ``<output_dir>/<sample_id>.png`` for the first
``num_cases`` cases, preferring slices that contain foreground (one slice per case, the one with the most
foreground). Each panel shows the per-slice PSNR of the input and of the restored image. An ``index.html`` lists
the panels.
"""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

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


def render_panel(item: Mapping[str, Any], path: str | os.PathLike, title: str = "") -> Path:
    """Write the 5-panel PNG of one decollated output item to ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    img, rest, clean = _to_2d(item.get("image")), _to_2d(item.get("restored")), _to_2d(item.get("target"))
    pred, gt = _to_2d(item.get("pred"), label=True), _to_2d(item.get("label"), label=True)
    base = clean if clean is not None else img
    panels: list[tuple[str, np.ndarray, bool]] = []
    if img is not None:
        t = "degraded input" + (f"\nPSNR {psnr(img, clean):.2f} dB" if clean is not None else "")
        panels.append((t, img, False))
    if rest is not None:
        t = "restored" + (f"\nPSNR {psnr(rest, clean):.2f} dB" if clean is not None else "")
        panels.append((t, rest, False))
    if clean is not None:
        panels.append(("clean (target)", clean, False))
    if pred is not None and base is not None:
        panels.append(("predicted mask", _overlay(base, pred), True))
    if gt is not None and base is not None:
        panels.append(("ground truth", _overlay(base, gt), True))
    if not panels:
        raise ValueError(f"nothing to draw: item keys {sorted(item)}")
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.0), squeeze=False)
    for ax, (t, a, rgb) in zip(axes[0], panels):
        ax.imshow(a if rgb else np.clip(a, 0, 1), cmap=None if rgb else "gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(t, fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


class VisualReportHandler:
    """Write PNG panels for the first ``num_cases`` cases seen by the evaluator (rank 0 only).

    Args:
        output_dir: folder of the PNGs and ``index.html``.
        num_cases: number of cases (volumes / images) to draw; one slice each.
        label_key: the label used to prefer foreground slices.
    """

    def __init__(self, output_dir: str | os.PathLike, num_cases: int = 4, label_key: str = "label") -> None:
        self.output_dir = Path(output_dir)
        self.num_cases = int(num_cases)
        self.label_key = label_key
        self._best: dict[str, tuple[float, dict]] = {}
        self.written: list[Path] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._best = {}

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
            if isinstance(b, Mapping) and "sample_id" in b:
                merged.setdefault("sample_id", b["sample_id"])
            case, _ = self._case(merged)
            if case not in self._best and len(self._best) >= self.num_cases:
                continue
            lab = _to_2d(merged.get(self.label_key), label=True)
            score = float((lab > 0).sum()) if lab is not None else 0.0
            if case not in self._best or score > self._best[case][0]:
                keep = {k: merged.get(k) for k in ("image", "restored", "target", "pred", "label", "sample_id")}
                keep = {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in keep.items()}
                self._best[case] = (score, keep)

    def _write(self, engine: Engine) -> None:
        try:
            import ignite.distributed as idist

            if idist.get_rank() != 0:
                return
        except Exception:  # pragma: no cover - ignite always present with MONAI engines
            pass
        rows = []
        for _score, item in self._best.values():
            _, sid = self._case(item)
            path = render_panel(item, self.output_dir / f"{sid}.png", title=sid)
            self.written.append(path)
            rows.append(f'<h3>{html.escape(sid)}</h3><img src="{html.escape(path.name)}">')
        if rows:
            (self.output_dir / "index.html").write_text(
                "<html><body><h2>VL-DUN evaluation: degraded | restored | clean | prediction | ground truth</h2>"
                + "\n".join(rows)
                + "</body></html>\n"
            )
            logger.info(f"VisualReportHandler: wrote {len(rows)} panels to {self.output_dir}")
