"""PSNR / SSIM of restored volumes in two conventions, for raw-data (fastMRI) evaluation against a target volume.

- **per slice** (the bundle's validation convention, ``val_psnr`` / ``val_ssim``): both volumes divided by the
  target volume's maximum and clipped to [0, 1], PSNR (MONAI ``PSNRMetric``, ``max_val`` 1) and SSIM (MONAI
  ``SSIMMetric``, ``data_range`` 1) of each slice, averaged over the slices;
- **per volume** (fastMRI's ``evaluate.py``, ``val_psnr_volume`` / ``val_ssim_volume``): in the target's units,
  PSNR over the whole volume with ``data_range`` = the target volume's maximum, and SSIM (scikit-image
  ``structural_similarity``, 7x7 window, as fastMRI) of each slice with that same ``data_range``, averaged.

:class:`VolumeMetricsHandler` computes them for each case of an evaluator run whose outputs hold a target (skips the
others), puts the means into ``engine.state.metrics`` and writes ``<output_dir>/metrics_volume.csv``.
"""

from __future__ import annotations

import csv
import logging
import os
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.metrics import PSNRMetric, SSIMMetric

__all__ = ["METRIC_NAMES", "VolumeMetricsHandler", "volume_metrics"]

logger = logging.getLogger(__name__)

METRIC_NAMES = ("val_psnr", "val_ssim", "val_psnr_volume", "val_ssim_volume")


def volume_metrics(pred: Any, target: Any) -> dict[str, float]:
    """The four metrics of a restored volume ``pred`` against ``target``, both (h, w, S) (slices last) in the same
    units (a leading channel of 1 is dropped)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    p, t = (torch.as_tensor(v).detach().cpu().float() for v in (pred, target))
    p, t = (v[0] if v.ndim == 4 else v for v in (p, t))
    if p.shape != t.shape or p.ndim != 3:
        raise ValueError(f"prediction {tuple(p.shape)} and target {tuple(t.shape)} must be the same (h, w, S).")
    vmax = float(t.max())
    # per slice, in [0, 1]: (S, 1, h, w)
    ps = (p / vmax).clamp(0, 1).permute(2, 0, 1)[:, None]
    ts = (t / vmax).clamp(0, 1).permute(2, 0, 1)[:, None]
    out = {
        "val_psnr": float(PSNRMetric(max_val=1.0)(ps, ts).mean()),
        "val_ssim": float(SSIMMetric(spatial_dims=2, data_range=1.0)(ps, ts).mean()),
    }
    pn, tn = p.numpy().transpose(2, 0, 1), t.numpy().transpose(2, 0, 1)
    out["val_psnr_volume"] = float(peak_signal_noise_ratio(tn, pn, data_range=vmax))
    out["val_ssim_volume"] = float(
        np.mean([structural_similarity(tn[i], pn[i], data_range=vmax) for i in range(tn.shape[0])])
    )
    return out


class VolumeMetricsHandler:
    """Per-case PSNR/SSIM (both conventions) of ``pred_key`` against ``target_key`` (output or batch entries).

    Args:
        output_dir: where ``metrics_volume.csv`` is written (one row per case and a ``mean`` row); ``None``: not
            written.
        name_key: the output entry naming the case (its MetaTensor's ``filename_or_obj``).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike | None = None,
        pred_key: str = "restored",
        target_key: str = "target",
        name_key: str = "restored",
        filename: str = "metrics_volume.csv",
    ) -> None:
        self.output_dir = output_dir
        self.pred_key, self.target_key, self.name_key = pred_key, target_key, name_key
        self.filename = filename
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def iteration_completed(self, engine: Engine) -> None:
        outputs = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        batches = engine.state.batch if isinstance(engine.state.batch, list) else [engine.state.batch]
        for o, b in zip(outputs, batches):
            # the engines keep the input's entries (the target read from the file) in the batch, the outputs apart
            item = {**(b if isinstance(b, dict) else {}), **(o if isinstance(o, dict) else {})}
            if item.get(self.target_key) is None or item.get(self.pred_key) is None:
                continue
            meta = getattr(item.get(self.name_key), "meta", {}) or {}
            name = os.path.basename(str(meta.get("filename_or_obj", f"case{len(self.rows)}")))
            self.rows.append({"case": name, **volume_metrics(item[self.pred_key], item[self.target_key])})

    def completed(self, engine: Engine) -> None:
        if not self.rows:
            logger.info("no case had a target (reconstruction_esc / reconstruction_rss): no PSNR/SSIM computed")
            return
        means = {k: float(np.mean([r[k] for r in self.rows])) for k in METRIC_NAMES}
        engine.state.metrics.update(means)
        logger.info(f"{len(self.rows)} volume(s): " + " ".join(f"{k}: {v:.4f}" for k, v in means.items()))
        if self.output_dir is not None:
            os.makedirs(self.output_dir, exist_ok=True)
            with open(os.path.join(self.output_dir, self.filename), "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=["case", *METRIC_NAMES])
                w.writeheader()
                w.writerows(self.rows)
                w.writerow({"case": "mean", **means})
