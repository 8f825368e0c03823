"""The bundle's own training recipe, called as a library: what ``train.json`` declares is what the benchmark trains.

Every learned method of the quality benchmark is trained by the bundle's
:class:`~scripts.workflows.engines.VLDUNTrainer` with the loss, optimiser and learning-rate schedule that
``bundle/configs/train.json`` instantiates (read with MONAI's ``ConfigParser``; ``--set KEY=VALUE`` overrides any
of its top-level values, or a key of one of its sections such as ``network_def#use_clip_prior``, exactly as
``python -m monai.bundle run training --KEY VALUE`` would). Only the data
differ: the benchmark feeds its protocol slices (fixed splits, fresh masks per sample) instead of the bundle's
datalist, so the schedule is laid out over ``iterations`` steps with the config's own ``epochs`` / ``warmup_epochs``
proportions. VL-DUN is built by the config's ``network_def`` (preset, CLIP settings), with an ablation's switch
added; the UNet baselines are wrapped so that they return the same dict as VL-DUN (``restored`` = input + residual,
or ``seg``), and the same ``VLDUNLoss`` then trains them with the terms they have.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "TRAIN_CONFIG",
    "DictOutput",
    "GradProbe",
    "Recipe",
    "parse_overrides",
    "shared_parameters",
]

TRAIN_CONFIG = Path(__file__).resolve().parents[2] / "bundle" / "configs" / "train.json"
_REQUIRED = object()  # Recipe.value's "no default": None is a legal config value


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["learning_rate=3e-4", "rec_loss=l1"]`` -> values (JSON when it parses, else the string)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}.")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _settable(parser: Any, key: str) -> bool:
    """Whether ``--set key=...`` names something of the config in ``parser`` (a MONAI ``ConfigParser``): an existing
    id, top-level or nested, or a new key of an existing section.

    A nested id (MONAI's ``#`` / ``::`` separators) may add a key to its section, since constructor arguments left
    at their defaults (``network_def#use_clip_prior``) are absent from the file; a misspelt argument then fails
    where the section is instantiated (MONAI's instantiation error names the keywords it was given).
    """
    from monai.bundle.reference_resolver import ReferenceResolver
    from monai.bundle.utils import ID_SEP_KEY

    if key in parser:
        return True
    section = ReferenceResolver.normalize_id(key).rpartition(ID_SEP_KEY)[0]
    return bool(section) and section in parser and isinstance(parser[section], dict)


class DictOutput(nn.Module):
    """A plain network as a VL-DUN-like dict: ``{"restored": x + net(x)}`` or ``{"seg": net(x)}``.

    ``before`` (optional, frozen) runs first and its output, clipped to [0, 1], is the input of ``net`` (the
    sequential pipeline: restoration network, then segmentation network).
    """

    def __init__(self, net: nn.Module, key: str, before: nn.Module | None = None) -> None:
        super().__init__()
        if key not in ("restored", "seg"):
            raise ValueError(f"key must be 'restored' or 'seg', got {key!r}.")
        self.net, self.key, self.before = net, key, before
        if before is not None:
            before.requires_grad_(False)

    def train(self, mode: bool = True) -> DictOutput:
        super().train(mode)
        if self.before is not None:
            self.before.eval()  # frozen: no batch-norm statistics updates
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.before is not None:
            with torch.no_grad():
                x = self.before(x)["restored"].clamp(0, 1)
        y = self.net(x)
        return {"restored": x + y} if self.key == "restored" else {"seg": y}


def shared_parameters(net: nn.Module) -> list[nn.Parameter]:
    """The trunk both tasks train: every trainable parameter outside the two heads and the CLIP prior."""
    heads = ("rec_head.", "seg_head.", "clip_prior.")
    return [p for n, p in net.named_parameters() if p.requires_grad and not n.startswith(heads)]


class GradProbe:
    """Every ``every`` iterations, the norm of each weighted loss term's gradient on the shared trunk.

    Recomputes the forward pass of the current batch and differentiates the restoration and segmentation terms
    separately (the optimiser step is untouched). Records ``(iteration, {"rec": norm, "seg": norm})``.
    """

    def __init__(self, every: int) -> None:
        self.every = int(every)
        self.records: list[tuple[int, dict[str, float]]] = []

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self)
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=1), self)

    def __call__(self, engine) -> None:
        net, loss = engine.network, engine.loss_function
        params = shared_parameters(net)
        if not params:
            return
        image, targets, *rest = engine.prepare_batch(engine.state.batch, engine.state.device, engine.non_blocking)
        net_kwargs = rest[1] if rest else {}
        # the extra training-mode forward would move the batch-norm running statistics: put them back afterwards,
        # so that a probed run evaluates the same network as an unprobed one
        stats = ("running_mean", "running_var", "num_batches_tracked")
        buffers = {k: v.clone() for k, v in net.state_dict().items() if k.endswith(stats)}
        terms = loss.terms(net(image, **net_kwargs), targets)
        weights = loss.effective_weights()
        norms: dict[str, float] = {"rec_weight": weights["rec"]}
        for name in ("rec", "seg"):
            if name not in terms:
                continue
            grads = torch.autograd.grad(weights[name] * terms[name], params, retain_graph=True, allow_unused=True)
            norms[name] = float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))
        self.records.append((engine.state.iteration, norms))
        net.load_state_dict(buffers, strict=False)


class Recipe:
    """``train.json``'s loss / optimiser / schedule / trainer for one benchmark run.

    Args:
        overrides: config values to change (``--set``), applied on top of ``train.json``: top-level keys, or ids
            into a section (``network_def#use_clip_prior``), as on the ``monai.bundle run`` command line.
        config_file: the training config (default: the bundle's ``train.json``).
        device: where the networks train (``"cpu"``, ``"cuda"``); the data stay on the CPU until the trainer's
            ``prepare_batch`` moves each batch, as in the bundle's own training.
    """

    def __init__(
        self,
        overrides: Mapping[str, Any] | None = None,
        config_file: str | Path = TRAIN_CONFIG,
        device: str | torch.device = "cpu",
    ) -> None:
        from monai.bundle import ConfigParser

        self.device = torch.device(device)
        self.config_file = Path(config_file)
        self.overrides = dict(overrides or {})
        base = ConfigParser.load_config_file(str(self.config_file))
        declared = ConfigParser(base)
        unknown = sorted(k for k in self.overrides if not _settable(declared, k))
        if unknown:
            raise KeyError(
                f"--set: {unknown} are neither top-level keys of {self.config_file.name} nor new keys of one of its "
                "sections (`network_def#use_clip_prior`)."
            )
        self._base = base

    def _parser(self, network: nn.Module | None, modality: str, iterations: int):
        from monai.bundle import ConfigParser

        parser = ConfigParser(json.loads(json.dumps(self._base)))
        for k, v in self.overrides.items():
            parser[k] = v
        parser["device"] = self.device
        parser["train_modalities"] = [modality]
        epochs = float(parser.get_parsed_content("epochs"))
        parser["iterations_per_epoch"] = iterations / max(epochs, 1e-9)
        if network is not None:
            parser["network"] = network
        return parser

    def value(self, key: str, default: Any = _REQUIRED) -> Any:
        """A top-level value of the recipe (after overrides), e.g. ``"learning_rate"``; ``default`` where the config
        lacks the key (an older config, written before the knob existed)."""
        parser = self._parser(None, "MRI", 1)
        if default is not _REQUIRED and key not in parser.config:
            return default
        return parser.get_parsed_content(key)

    def build_vldun(self, num_classes: int, switches: Mapping[str, Any]) -> nn.Module:
        """The config's ``network_def`` with ``num_classes`` and an ablation's switches."""
        parser = self._parser(None, "MRI", 1)
        parser["network_def"]["num_classes"] = int(num_classes)
        for k, v in switches.items():
            parser["network_def"][k] = v
        return parser.get_parsed_content("network_def")

    def describe(self) -> dict[str, Any]:
        """The recipe values a results file records."""
        keys = (
            "learning_rate",
            "weight_decay",
            "epochs",
            "warmup_epochs",
            "warmup_start_factor",
            "lambda_rec",
            "lambda_seg",
            "lambda_mod",
            "lambda_deg",
            "lambda_pre_dc",
            "rec_loss",
            "ssim_weight",
            "task_balance",
            "dice_ce_kwargs",
            "grad_clip_norm",
            "clip_similarity",
            "preset",
            "seg_hidden",
            "seg_norm",
            "seg_decoder",
            "seg_unet_features",
            "seg_unet_dropout",
            "seg_feature_grad",
            "measurement_dropout",
            "dc_projection",
            "dc_cascades",
            "dc_cascade_features",
            "dc_to_seg",
        )
        parser = self._parser(None, "MRI", 1)
        out = {k: parser.get_parsed_content(k) for k in keys if k in parser.config}
        out["optimizer"] = parser["optimizer"]["_target_"]
        out["lr_scheduler"] = parser["lr_scheduler"]["_target_"]
        out["config"] = str(self.config_file.name)
        out["overrides"] = dict(self.overrides)
        return out

    def train(
        self,
        network: nn.Module,
        batches: Callable[[], Iterator[Mapping[str, Any]]],
        iterations: int,
        modality: str,
        time_budget: float | None = None,
        log_every: int = 0,
        name: str = "",
        grad_probe: int = 0,
        network_keys: Sequence[str] = (),
        measurement_dropout: float | None = None,
    ) -> dict[str, Any]:
        """Train ``network`` for ``iterations`` steps with the recipe; returns timing, losses and probe records.

        ``network_keys``: batch entries passed to the network (``("kspace", "mask")`` for the known-operator
        methods), as ``train.json``'s ``measurement_keys`` do, dropped from a batch with the config's
        ``measurement_dropout`` (``measurement_dropout`` here overrides it: 0 for a network that cannot run blind)."""
        from ignite.engine import Events
        from monai.handlers import LrScheduleHandler

        from scripts.workflows.engines import PrepareVLDUNBatch, VLDUNTrainer, loss_terms

        network.to(self.device)  # before the optimiser is built from its parameters
        parser = self._parser(network, modality, iterations)
        loss = parser.get_parsed_content("loss")
        optimizer = parser.get_parsed_content("optimizer")
        scheduler = parser.get_parsed_content("lr_scheduler")
        data = _Repeat(batches)
        trainer = VLDUNTrainer(
            device=self.device,
            max_epochs=1,
            epoch_length=int(iterations),
            train_data_loader=data,
            network=network,
            optimizer=optimizer,
            loss_function=loss,
            amp=False,
            decollate=False,  # no post-processing here: keep the batch output (and its loss) whole
            prepare_batch=PrepareVLDUNBatch(
                network_keys=network_keys,
                measurement_dropout=(
                    0.0
                    if not network_keys
                    else float(
                        parser.get_parsed_content("measurement_dropout")
                        if measurement_dropout is None
                        else measurement_dropout
                    )
                ),
            ),
            train_handlers=[LrScheduleHandler(scheduler, epoch_level=False, print_lr=False)],
            grad_clip_norm=parser.get_parsed_content("grad_clip_norm") if "grad_clip_norm" in parser.config else None,
        )
        losses: list[float] = []
        # every loss term and the pre-clip gradient norm per iteration: a divergence is read from the trace afterwards
        trace: dict[str, list[float]] = {}
        t0 = time.perf_counter()

        @trainer.on(Events.ITERATION_COMPLETED)
        def _record(engine) -> None:
            terms = loss_terms(engine.state.output)
            losses.append(terms["loss"])
            grad_norm = getattr(engine.state, "grad_norm", None)
            if grad_norm is not None:
                terms["grad_norm"] = grad_norm
            for k, v in terms.items():
                trace.setdefault(k, []).append(v)
            it = engine.state.iteration
            if log_every and (it % log_every == 0 or it == 1):
                el = time.perf_counter() - t0
                means = " ".join(f"{k} {np.mean(v[-log_every:]):.4f}" for k, v in trace.items() if k != "grad_norm")
                peak = f" grad_norm max {max(trace['grad_norm'][-log_every:]):.3g}" if "grad_norm" in trace else ""
                print(f"  [{name}] it {it}/{iterations} {means}{peak} {el:.0f}s", flush=True)
            if time_budget is not None and time.perf_counter() - t0 >= time_budget:
                engine.terminate()

        probe = GradProbe(grad_probe) if grad_probe else None
        if probe is not None:
            probe.attach(trainer)
        trainer.run()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the last steps are still queued: count them
        seconds = time.perf_counter() - t0
        network.eval()
        out: dict[str, Any] = {
            "iterations": len(losses),
            "train_seconds": seconds,
            "loss_first": losses[:1],
            "loss_last": losses[-20:],
            "final_lr": float(optimizer.param_groups[0]["lr"]),
            "trace": {k: [float(f"{x:.5g}") for x in v] for k, v in trace.items()},
        }
        if probe is not None:
            out["grad_probe"] = [{"iteration": i, **n} for i, n in probe.records]
        return out


class _Repeat:
    """An endless iterable over a fresh batch stream (Ignite stops it with ``epoch_length``)."""

    def __init__(self, batches: Callable[[], Iterator[Mapping[str, Any]]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        return self.batches()
