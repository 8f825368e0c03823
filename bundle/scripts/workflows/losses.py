"""Joint objective of VL-DUN (paper section 3.5) and of the CLIP prior fine-tuning stage (section 3.3).

``L = λ_rec·L_rec(x̂, x) + λ_seg·DiceCE(ŝ, s) + λ_mod·Focal(modality_logits, m) + λ_deg·CE(degradation_logits, d)
+ λ_pre_dc·L_rec(x̂_pre, x)``

- ``L_rec`` is MSE (default), L1 (as VLU-Net/AMIR) or Charbonnier ``sqrt((x̂-x)² + ε²)`` (MambaIR), plus
  ``ssim_weight·(1 − SSIM)`` when ``ssim_weight > 0`` (7×7 uniform window, the benchmark's SSIM);
- ``DiceCE`` is ``monai.losses.DiceCELoss(to_onehot_y=True, softmax=True)`` on the segmentation logits;
- ``Focal`` is ``monai.losses.FocalLoss(to_onehot_y=True, use_softmax=True, gamma=γ)`` on the modality logits (Eq. 3);
- the degradation term is the image–text contrastive cross-entropy over the similarity logits (section 3.3.3);
- ``x̂_pre`` (``restored_pre_dc``) is, with known-operator data consistency and measurements, the rec head's estimate
  before the k-space projection: the image the same weights give without measurements. The hard projection replaces
  that estimate's measured samples, so the final image's loss says nothing about them; without this term only the
  blind batches of ``measurement_dropout`` do, and they then meet a rec head that drifted (restoration spikes of
  DC VL-DUN on ACDC, ``bundle/docs/README.md``, *Performance*). Not in the paper (it has no known operator).

Why MSE by default: the quality is scored by PSNR, and undersampling aliasing makes most zero-filled pixels too
bright, so L1 is lowered most cheaply by darkening everything (the median, not the mean) and cost VL-DUN PSNR in
controlled runs (``benchmarks/results/``). With fixed weights the segmentation term's gradient on the shared trunk
was 5-25x the restoration term's at ``lambda_rec`` 10, and ``lambda_rec`` 150 crowded segmentation out, so by
default (``task_balance="gradnorm"``) the restoration weight follows the ratio of the two gradient norms on the
features both heads read (``benchmarks/bench_quality.py --grad-probe`` measures the trunk's).

The modality and degradation terms (the CLIP prior, section 3.3) only carry information when the training data hold
more than one class: pass ``num_modalities`` / ``num_degradations`` (the number of classes the training data can
show) and a term with fewer than two classes is switched off, whatever its weight.

A term is skipped (and not logged) when its weight is 0, when the network did not produce the prediction (an
ablation without segmentation or reconstruction head, a network without CLIP prior) or when the batch has no
target for it. The value of every computed term is kept in :attr:`VLDUNLoss.last_terms` (detached floats), which
the engines copy into ``engine.state.output`` as ``loss_rec``, ``loss_seg``, ``loss_mod``, ``loss_deg`` and
``loss_pre_dc``.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, FocalLoss, SSIMLoss
from torch import nn
from torch.autograd.graph import GradientEdge

from ..flags import as_bool

logger = logging.getLogger(__name__)

__all__ = ["VLDUNLoss", "CharbonnierLoss", "REC_LOSSES", "TASK_BALANCE", "TERM_NAMES"]

#: term name -> (prediction key, target key) as produced by the network and the preprocessing.
TERM_NAMES: dict[str, tuple[str, str]] = {
    "rec": ("restored", "target"),
    "seg": ("seg", "label"),
    "mod": ("modality_logits", "modality"),
    "deg": ("degradation_logits", "degradation"),
    "pre_dc": ("restored_pre_dc", "target"),
}


def _head_input(shared: torch.Tensor) -> torch.Tensor | GradientEdge:
    """What to differentiate with respect to for the features the heads read.

    ``shared`` itself, except under ``DistributedDataParallel(find_unused_parameters=True)``: DDP then passes every
    output through one identity autograd node (``_DDPSinkBackward``), so the outputs the loss sees are copies and
    the heads' outputs do not depend on the ``shared`` copy. The gradient edge into that node's input of the same
    index is the tensor the heads did read.
    """
    node = shared.grad_fn
    if node is not None and type(node).__name__ == "_DDPSinkBackward":
        inner, index = node.next_functions[shared.output_nr]
        if inner is not None:
            return GradientEdge(inner, index)
    return shared


class CharbonnierLoss(nn.Module):
    """Charbonnier (smooth L1) loss ``mean(sqrt((x - y)² + eps²))``."""

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        if eps <= 0:
            raise ValueError(f"Charbonnier eps must be > 0, got {eps}.")
        self.eps = float(eps)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((x - y) ** 2 + self.eps**2).mean()


#: how the restoration and segmentation weights relate: ``fixed`` (``lambda_rec``, ``lambda_seg`` as given) or
#: ``gradnorm`` (``lambda_rec`` times a running multiplier that equalises the two terms' gradient norms on the
#: features both heads read; the network must return them as ``shared`` in training, as VLDUN does).
TASK_BALANCE: tuple[str, ...] = ("fixed", "gradnorm")
_MAX_LOG_BALANCE = math.log(1e4)

#: restoration losses by name (Charbonnier takes its eps from the loss' arguments).
REC_LOSSES: dict[str, type[nn.Module]] = {"mse": nn.MSELoss, "l1": nn.L1Loss, "charbonnier": CharbonnierLoss}


def _class_index(t: Any, device: torch.device) -> torch.Tensor:
    """Targets of a classification term as a (B,) long tensor (accepts (B,), (B, 1), lists and ints)."""
    t = torch.as_tensor(t, device=device)
    return t.reshape(-1).long()


class VLDUNLoss(nn.Module):
    """Weighted sum of the restoration, segmentation, modality and degradation losses.

    Args:
        lambda_rec, lambda_seg, lambda_mod, lambda_deg: term weights (0 switches a term off).
        lambda_pre_dc: weight of the restoration loss on the rec head's estimate before the data-consistency
            projection (``restored_pre_dc``; only networks with measurements produce it); 0: off.
        rec_loss: ``"mse"``, ``"l1"`` or ``"charbonnier"``.
        ssim_weight: weight of ``1 − SSIM`` added to the restoration term (0: none).
        charbonnier_eps: ε of the Charbonnier loss.
        focal_gamma: focusing parameter γ of the modality focal loss.
        focal_alpha: optional α of the focal loss (``None``: no class balancing).
        dice_ce_kwargs: extra arguments for ``DiceCELoss``, e.g. ``{"batch": true}`` (one Dice per class over the
            whole batch instead of per slice, as nnU-Net does for small structures), ``{"include_background": false}``
            or ``{"weight": [...]}`` (class weights of the cross-entropy).
        pred_keys / target_keys: override the dictionary keys of :data:`TERM_NAMES` (term -> key).
        num_modalities, num_degradations: how many modality / degradation classes the training data can show
            (``None``: unknown, the weight decides); fewer than 2 switches that term off (a constant target).
        task_balance: ``"fixed"`` or ``"gradnorm"`` (see :data:`TASK_BALANCE`).
        balance_momentum: smoothing of the ``gradnorm`` multiplier (per iteration, in the log domain).

    ``forward(pred, targets)`` takes the network's output dict and a dict of targets (``target`` clean image,
    ``label`` segmentation (B, 1, H, W), ``modality`` and ``degradation`` class indices) and returns the scalar total.
    """

    def __init__(
        self,
        lambda_rec: float = 10.0,
        lambda_seg: float = 1.0,
        lambda_mod: float = 0.1,
        lambda_deg: float = 0.1,
        rec_loss: str = "mse",
        charbonnier_eps: float = 1e-3,
        ssim_weight: float = 0.0,
        focal_gamma: float = 2.0,
        focal_alpha: float | None = None,
        dice_ce_kwargs: Mapping[str, Any] | None = None,
        pred_keys: Mapping[str, str] | None = None,
        target_keys: Mapping[str, str] | None = None,
        num_modalities: int | None = None,
        num_degradations: int | None = None,
        task_balance: str = "gradnorm",
        balance_momentum: float = 0.9,
        lambda_pre_dc: float = 0.0,
    ) -> None:
        super().__init__()
        self.weights = {"rec": float(lambda_rec), "seg": float(lambda_seg), "mod": float(lambda_mod)}
        self.weights["deg"] = float(lambda_deg)
        self.weights["pre_dc"] = float(lambda_pre_dc)
        for name, w in self.weights.items():
            if not math.isfinite(w) or w < 0:
                raise ValueError(f"loss weight lambda_{name} must be a finite number >= 0, got {w}.")
        for name, n in (("mod", num_modalities), ("deg", num_degradations)):
            if n is not None and int(n) < 2:
                self.weights[name] = 0.0  # one class: the target is constant and the term teaches nothing
        rec = str(rec_loss).lower()
        if rec not in REC_LOSSES:
            raise ValueError(f"rec_loss must be one of {list(REC_LOSSES)}, got {rec_loss!r}.")
        self.rec_loss: nn.Module = CharbonnierLoss(charbonnier_eps) if rec == "charbonnier" else REC_LOSSES[rec]()
        self.ssim_weight = float(ssim_weight)
        if not math.isfinite(self.ssim_weight) or self.ssim_weight < 0:
            raise ValueError(f"ssim_weight must be a finite number >= 0, got {ssim_weight}.")
        self.ssim_loss = SSIMLoss(spatial_dims=2, data_range=1.0, kernel_type="uniform", win_size=7)
        if task_balance not in TASK_BALANCE:
            raise ValueError(f"task_balance must be one of {list(TASK_BALANCE)}, got {task_balance!r}.")
        if not 0.0 <= float(balance_momentum) < 1.0:
            raise ValueError(f"balance_momentum must be in [0, 1), got {balance_momentum}.")
        self.task_balance, self.balance_momentum = task_balance, float(balance_momentum)
        # log of the running multiplier of the restoration weight ("gradnorm"); NaN until the first measurement
        self.register_buffer("log_rec_balance", torch.tensor(float("nan")))
        self._warned_unused = False
        kw = {"to_onehot_y": True, "softmax": True}
        kw.update(dict(dice_ce_kwargs or {}))
        params = inspect.signature(DiceCELoss).parameters
        unknown = sorted(set(kw) - set(params))
        if unknown:
            raise ValueError(
                f"dice_ce_kwargs has {unknown}, which monai.losses.DiceCELoss does not take; "
                f"its arguments are {sorted(params)}."
            )
        for name, value in kw.items():
            if isinstance(params[name].default, bool):  # the bundle CLI passes true/false as (truthy) strings
                kw[name] = as_bool(value, f"dice_ce_kwargs[{name!r}]")
        self.seg_loss = DiceCELoss(**kw)
        self.mod_loss = FocalLoss(to_onehot_y=True, use_softmax=True, gamma=float(focal_gamma), alpha=focal_alpha)
        self.pred_keys = {k: v[0] for k, v in TERM_NAMES.items()}
        self.pred_keys.update(dict(pred_keys or {}))
        self.target_keys = {k: v[1] for k, v in TERM_NAMES.items()}
        self.target_keys.update(dict(target_keys or {}))
        self.last_terms: dict[str, float] = {}

    def terms(self, pred: Mapping[str, Any], targets: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The unweighted value of every term that can be computed for this batch."""
        if not isinstance(pred, Mapping):
            raise TypeError(
                "VLDUNLoss expects the network to return a dict (restored/seg/modality_logits/degradation_logits), "
                f"got {type(pred).__name__}; set the network's output mode to 'dict' for training."
            )
        targets = targets if isinstance(targets, Mapping) else {self.target_keys["seg"]: targets}
        out: dict[str, torch.Tensor] = {}
        for name, w in self.weights.items():
            p, t = pred.get(self.pred_keys[name]), targets.get(self.target_keys[name])
            if w == 0 or p is None or t is None:
                continue
            if name in ("rec", "pre_dc"):
                t = torch.as_tensor(t, device=p.device).float()
                out[name] = self.rec_loss(p.float(), t)
                if self.ssim_weight > 0:
                    out[name] = out[name] + self.ssim_weight * self._ssim(p.float(), t)
            elif name == "seg":
                t = torch.as_tensor(t, device=p.device)
                out[name] = self.seg_loss(p.float(), t if t.ndim == p.ndim else t.unsqueeze(1))
            elif name == "mod":
                out[name] = self.mod_loss(p.float(), _class_index(t, p.device).unsqueeze(1))
            else:
                out[name] = F.cross_entropy(p.float(), _class_index(t, p.device))
        return out

    def _ssim(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # SSIMLoss is 2D; volumes (B, C, H, W, D) are scored slice by slice along the last axis.
        if x.ndim == 5:
            x, y = (v.movedim(-1, 1).flatten(0, 1) for v in (x, y))
        return self.ssim_loss(x, y)

    @property
    def rec_balance(self) -> float:
        """The current multiplier of ``lambda_rec`` (1 with ``task_balance="fixed"`` or before any measurement)."""
        v = float(self.log_rec_balance)
        return 1.0 if self.task_balance == "fixed" or not math.isfinite(v) else math.exp(v)

    def effective_weights(self) -> dict[str, float]:
        """The term weights applied now (``lambda_rec`` times the ``gradnorm`` multiplier)."""
        return dict(self.weights, rec=self.weights["rec"] * self.rec_balance)

    def _update_balance(self, pred: Mapping[str, Any], terms: Mapping[str, torch.Tensor]) -> None:
        # gradient norms of the two weighted terms w.r.t. the features both heads read (cheap: through the heads
        # only); their ratio, smoothed in the log domain, scales the restoration weight so the two are equal
        shared = pred.get("shared")
        if not ("rec" in terms and "seg" in terms and isinstance(shared, torch.Tensor) and shared.requires_grad):
            return
        target = _head_input(shared)
        grads = [
            torch.autograd.grad(self.weights[k] * terms[k], target, retain_graph=True, allow_unused=True)[0]
            for k in ("rec", "seg")
        ]
        if any(g is None for g in grads):
            # ``shared`` is not what the heads read (a wrapper other than the DDP one of _head_input): the
            # multiplier then stays where it is, and the user is told once
            if not self._warned_unused:
                logger.warning(
                    "VLDUNLoss(task_balance='gradnorm'): the 'shared' features are not on the graph of the "
                    "restoration and segmentation outputs (a wrapper copies the outputs); the "
                    "restoration weight stays at lambda_rec x %.3g.",
                    self.rec_balance,
                )
                self._warned_unused = True
            return
        g_rec, g_seg = (g.float().norm() for g in grads)
        if not (float(g_rec) > 0 and float(g_seg) > 0 and math.isfinite(float(g_rec) + float(g_seg))):
            return  # e.g. the zero-initialised rec head of the first step passes no gradient
        log_ratio = float(torch.log(g_seg) - torch.log(g_rec))
        log_ratio = min(max(log_ratio, -_MAX_LOG_BALANCE), _MAX_LOG_BALANCE)
        old = float(self.log_rec_balance)
        m = self.balance_momentum
        self.log_rec_balance.fill_(log_ratio if not math.isfinite(old) else m * old + (1 - m) * log_ratio)

    def forward(self, pred: Mapping[str, Any], targets: Mapping[str, Any]) -> torch.Tensor:
        terms = self.terms(pred, targets)
        if not terms:
            raise ValueError(
                "VLDUNLoss: no loss term could be computed: the network output has keys "
                f"{sorted(pred)} and the targets {sorted(targets) if isinstance(targets, Mapping) else '?'}; "
                f"expected pairs {[(self.pred_keys[k], self.target_keys[k]) for k in self.weights]} with weight > 0."
            )
        if self.task_balance == "gradnorm" and self.training and torch.is_grad_enabled():
            self._update_balance(pred, terms)
        weights = self.effective_weights()
        total = sum(weights[k] * v for k, v in terms.items())
        self.last_terms = {f"loss_{k}": float(v.detach()) for k, v in terms.items()}
        if self.task_balance != "fixed" and "rec" in terms and "seg" in terms and "shared" in pred:
            self.last_terms["loss_rec_balance"] = self.rec_balance  # logged with the terms: the effective weight
        return total  # type: ignore[return-value]
