"""The methods compared by the quality benchmark: their names, groups and labels (``BASELINES``, ``ABLATIONS``,
``METHODS``, ``ABLATION_SWITCHES``, ``METHOD_LABELS``), the UNet factory, the seeded batch sampler (the bundle's
batch dicts), batched prediction, and ``Runner``, which trains each method with the bundle's own recipe
(:mod:`benchmarks.quality.recipe`: ``train.json``'s trainer, loss, optimiser and schedule) and evaluates it on one
dataset and degradation.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks._slices import LoadedDataset
from benchmarks.quality.degradation import Degradation, make_test_inputs
from benchmarks.quality.metrics import summarize
from benchmarks.quality.recipe import DictOutput, Recipe

__all__ = ["ABLATIONS", "ABLATION_SWITCHES", "BASELINES", "KNOWN_OPERATOR", "METHODS", "METHOD_LABELS", "Runner"]

BASELINES = ("zero_filled", "rec_unet", "seg_unet_degraded", "seg_unet_clean", "sequential")
ABLATIONS = ("vldun_no_clip", "vldun_frozen_clip", "vldun_no_fd", "vldun_no_seg", "vldun_no_rec")
#: methods that read the measured k-space and mask (known-operator data consistency)
KNOWN_OPERATOR = ("varnet", "vldun_dc")
METHODS = BASELINES + ("vldun",) + ABLATIONS + KNOWN_OPERATOR
ABLATION_SWITCHES: dict[str, dict[str, Any]] = {
    "vldun": {},
    "vldun_dc": {"data_consistency": True},
    "vldun_no_clip": {"use_clip_prior": False},
    "vldun_frozen_clip": {"tune_clip": False},
    "vldun_no_fd": {"freq_decouple": False},
    "vldun_no_seg": {"seg_head": False},
    "vldun_no_rec": {"rec_head": False},
}
METHOD_LABELS = {
    "zero_filled": "zero-filled input",
    "rec_unet": "restoration-only UNet (input + residual)",
    "seg_unet_degraded": "segmentation-only UNet on the degraded input",
    "seg_unet_clean": "segmentation-only UNet on the clean input (upper bound)",
    "sequential": "sequential: restoration UNet, then segmentation UNet on its outputs",
    "vldun": "VL-DUN joint",
    "vldun_no_clip": "VL-DUN w/o CLIP prior",
    "vldun_frozen_clip": "VL-DUN w/o CLIP tuning (frozen CLIP)",
    "vldun_no_fd": "VL-DUN w/o frequency decoupling",
    "vldun_no_seg": "VL-DUN w/o segmentation head",
    "vldun_no_rec": "VL-DUN w/o reconstruction head",
    "varnet": "single-coil VarNet (MONAI VarNetBlock cascades, known mask)",
    "vldun_dc": "VL-DUN joint + known-operator data consistency",
}


# ------------------------------------------------------------------------------------------------ networks
def make_unet(out_channels: int, features: Sequence[int], dropout: float = 0.0) -> nn.Module:
    from monai.networks.nets import BasicUNet

    return BasicUNet(
        spatial_dims=2, in_channels=1, out_channels=out_channels, features=tuple(features), dropout=float(dropout)
    )


def n_params(net: nn.Module) -> int:
    """Parameters of a network: VL-DUN's own count (trainable, without the open_clip encoder), else all."""
    inner = net.net if isinstance(net, DictOutput) else net
    if hasattr(inner, "num_parameters"):
        return int(inner.num_parameters())
    return sum(p.numel() for p in inner.parameters())


# ------------------------------------------------------------------------------------------------ training data
class BatchSampler:
    """Epoch-wise shuffled batches with random flips and a fresh mask per sample (seeded: same for every method).

    Yields the bundle's batch dicts: ``image`` (the degraded slice, or the clean one with ``clean_input``),
    ``target``, ``label``, ``modality`` and ``degradation`` (class ids), as the training config's transforms do.
    """

    def __init__(
        self,
        data: LoadedDataset,
        deg: Degradation,
        batch_size: int,
        seed: int,
        clean_input: bool = False,
        measurements: bool = False,
    ):
        from scripts.prompts import modality_index

        self.images, self.labels = data.train.images, data.train.labels
        self.batch_size = int(batch_size)
        self.rng = np.random.RandomState(seed % 2**32)
        self.undersample = deg.transform()
        self.undersample.set_random_state(seed=seed % 2**32)
        self.order: list[int] = []
        self.clean_input = clean_input
        self.measurements = measurements
        self.modality = modality_index(data.modality.split("/")[0])
        self.degradation = int(self.undersample.degradation)

    def _indices(self) -> list[int]:
        idx = []
        while len(idx) < self.batch_size:
            if not self.order:
                self.order = list(self.rng.permutation(len(self.images)))
            idx.append(self.order.pop())
        return idx

    def next(self) -> dict[str, torch.Tensor]:
        idx = self._indices()
        imgs, labs = self.images[idx].copy(), self.labels[idx].copy()
        for b in range(len(idx)):
            for ax in (-1, -2):
                if self.rng.rand() < 0.5:
                    imgs[b], labs[b] = np.flip(imgs[b], ax), np.flip(labs[b], ax)
        clean = torch.as_tensor(np.ascontiguousarray(imgs))[:, None]
        bs = clean.shape[0]
        # the masks are drawn even for the clean-input method, so every method sees the same random stream
        degraded = torch.as_tensor(np.asarray(self.undersample(clean)), dtype=torch.float32)  # a mask per sample
        batch = {
            "image": clean if self.clean_input else degraded,
            "target": clean,
            "label": torch.as_tensor(labs)[:, None],
            "modality": torch.full((bs,), self.modality, dtype=torch.long),
            "degradation": torch.full((bs,), self.degradation, dtype=torch.long),
        }
        if self.measurements:
            batch["kspace"], batch["mask"] = self.undersample.kspace, self.undersample.mask
        return batch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            yield self.next()


@torch.no_grad()
def predict(
    net: nn.Module, inputs: np.ndarray, batch: int, measured: tuple[np.ndarray, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """The dict outputs (``restored``, ``seg``, prior logits) of ``net`` over ``inputs`` (N, S, S); ``measured``:
    the (N, S, S) complex k-space and masks, passed to networks that use them."""
    net.eval()
    device = next(net.parameters()).device
    keep = ("restored", "seg", "modality_logits", "degradation_logits")
    outs: dict[str, list[np.ndarray]] = {}
    for i in range(0, inputs.shape[0], batch):
        kwargs = {}
        if measured is not None:
            kwargs = {
                k: torch.as_tensor(v[i : i + batch])[:, None].to(device) for k, v in zip(("kspace", "mask"), measured)
            }
        out = net(torch.as_tensor(inputs[i : i + batch])[:, None].to(device), **kwargs)
        for k in keep:
            if out.get(k) is not None:
                outs.setdefault(k, []).append(out[k].detach().cpu().numpy())
    return {k: np.concatenate(v) for k, v in outs.items()}


# ------------------------------------------------------------------------------------------------ runner
class Runner:
    """Trains (with the bundle's recipe, :mod:`benchmarks.quality.recipe`) and evaluates the methods on one
    dataset / degradation."""

    def __init__(self, data: LoadedDataset, deg: Degradation, args: argparse.Namespace, recipe: Recipe):
        self.data, self.deg, self.args, self.recipe = data, deg, args, recipe
        self.k = data.num_classes
        t = time.perf_counter()
        self.test_clean = data.test.images
        self.test_inputs, *measured = make_test_inputs(self.test_clean, deg, args.seed, data.name, measurements=True)
        self.test_measured: tuple[np.ndarray, np.ndarray] = tuple(measured)
        self.mask_seconds = time.perf_counter() - t
        self.rec_net: nn.Module | None = None
        self.rec_record: dict[str, Any] | None = None

    def _train_seed(self) -> int:
        a = self.args
        return a.seed if a.train_seed is None else a.train_seed

    def _seg_dropout(self) -> float:
        """The recipe's ``seg_unet_dropout``: the baselines' segmentation UNets get what VL-DUN's UNet head gets."""
        return float(self.recipe.value("seg_unet_dropout", 0.0))

    def _train(self, net: nn.Module, name: str, clean_input: bool = False) -> dict[str, Any]:
        a = self.args
        torch.manual_seed(self._train_seed())
        seed = self._train_seed()
        known = name in KNOWN_OPERATOR
        return self.recipe.train(
            net,
            lambda: iter(
                BatchSampler(self.data, self.deg, a.batch_size, seed, clean_input=clean_input, measurements=known)
            ),
            a.iterations,
            self.data.modality.split("/")[0],
            time_budget=a.time_budget,
            log_every=a.log_every,
            name=name,
            grad_probe=getattr(a, "grad_probe", 0) if name.startswith("vldun") else 0,
            network_keys=("kspace", "mask") if known else (),
            # the VarNet cascade starts from the measured k-space: it has no blind mode to train with dropout
            measurement_dropout=0.0 if name == "varnet" else None,
        )

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
            net: nn.Module = DictOutput(make_unet(1, a.unet_features), "restored")
            rec.update(self._train(net, method))
            self.rec_net, self.rec_record = net, dict(rec)
            t = time.perf_counter()
            rec.update(self._eval(predict(net, self.test_inputs, a.eval_batch)["restored"], None))
        elif method == "varnet":
            from benchmarks.quality.varnet import KspaceVarNet

            net = KspaceVarNet(a.varnet_cascades, a.unet_features)
            rec.update(self._train(net, method))
            t = time.perf_counter()
            out = predict(net, self.test_inputs, a.eval_batch, self.test_measured)
            rec.update(self._eval(out["restored"], None))
            rec["cascades"] = int(a.varnet_cascades)
        elif method in ("seg_unet_degraded", "seg_unet_clean"):
            net = DictOutput(make_unet(self.k, a.unet_features, self._seg_dropout()), "seg")
            use_clean = method == "seg_unet_clean"
            rec.update(self._train(net, method, clean_input=use_clean))
            t = time.perf_counter()
            inputs = self.test_clean if use_clean else self.test_inputs
            rec.update(self._eval(None, predict(net, inputs, a.eval_batch)["seg"]))
        elif method == "sequential":
            extra = 0.0
            if self.rec_net is None:
                print("  [sequential] training its restoration UNet first", flush=True)
                first = self.run("rec_unet")
                extra = first["train_seconds"]
            assert self.rec_net is not None and self.rec_record is not None
            net = DictOutput(make_unet(self.k, a.unet_features, self._seg_dropout()), "seg", before=self.rec_net)
            rec.update(self._train(net, method))
            rec["seg_train_seconds"] = rec["train_seconds"]
            rec["rec_train_seconds"] = self.rec_record["train_seconds"]
            rec["train_seconds"] = rec["seg_train_seconds"] + rec["rec_train_seconds"]
            rec["rec_iterations"] = self.rec_record["iterations"]
            rec["rec_trained_here"] = extra > 0
            t = time.perf_counter()
            restored = predict(self.rec_net, self.test_inputs, a.eval_batch)["restored"]
            rec.update(self._eval(restored, predict(net, self.test_inputs, a.eval_batch)["seg"]))
            rec["params"] = n_params(self.rec_net) + n_params(net)
        elif method in ABLATION_SWITCHES:
            # the blind methods are the paper's network whatever train.json's default; vldun_dc switches it on
            switches = {"data_consistency": method in KNOWN_OPERATOR, **ABLATION_SWITCHES[method]}
            if a.scan_chunk:
                switches["chunk_size"] = a.scan_chunk
            net = self.recipe.build_vldun(self.k, switches)
            rec.update(self._train(net, method))
            t = time.perf_counter()
            measured = self.test_measured if method in KNOWN_OPERATOR else None
            out = predict(net, self.test_inputs, a.eval_batch, measured)
            rec.update(self._eval(out.get("restored"), out.get("seg")))
            if measured is not None:
                # the same weights without k-space and mask: what they give a user who has only images (the
                # price or benefit of training with measurement dropout is measured on both sides)
                blind = predict(net, self.test_inputs, a.eval_batch)
                rec["blind"] = self._eval(blind.get("restored"), blind.get("seg"))
            if "modality_logits" in out:
                rec["modality_accuracy"] = float((out["modality_logits"].argmax(1) == self._modality()).mean())
                deg_id = int(self.deg.transform().degradation)
                rec["degradation_accuracy"] = float((out["degradation_logits"].argmax(1) == deg_id).mean())
            rec["switches"] = ABLATION_SWITCHES[method]
            rec["preset"] = self.recipe.value("preset")
        else:
            raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
        rec["eval_seconds"] = time.perf_counter() - t
        rec.setdefault("params", n_params(net))
        rec["sec_per_iter"] = rec["train_seconds"] / max(rec["iterations"], 1)
        return rec

    def _modality(self) -> int:
        from scripts.prompts import modality_index

        return modality_index(self.data.modality.split("/")[0])
