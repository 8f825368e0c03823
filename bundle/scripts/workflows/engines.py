"""Ignite engines for a network with several outputs (VL-DUN, the CLIP prior).

MONAI's ``SupervisedTrainer``/``SupervisedEvaluator`` expect one prediction tensor and one target. VL-DUN returns a
dict (``restored``, ``seg``, ``modality_logits``, ``degradation_logits``) and needs four targets, so:

- :class:`PrepareVLDUNBatch` returns ``(image, {"target", "label", "modality", "degradation"})`` (the keys present);
- the loss (:class:`~scripts.workflows.losses.VLDUNLoss`) takes the two dicts;
- :class:`VLDUNTrainer` / :class:`VLDUNEvaluator` then *flatten* ``engine.state.output`` before decollation and
  post-processing, so that the usual MONAI idioms work unchanged: ``pred`` holds the segmentation logits,
  ``label`` the label map, and ``restored``, ``target``, ``modality_logits``, ``modality``, ``degradation_logits``,
  ``degradation`` sit next to them; the trainer also adds every loss term (``loss_rec``, ``loss_seg``,
  ``loss_mod``, ``loss_deg``) next to ``loss``.

:class:`LossTermsHandler` averages the loss terms over each epoch into ``engine.state.metrics`` (``train_loss``,
``train_loss_rec``, ...), where ``StatsHandler``, ``TensorBoardStatsHandler`` and ``MLFlowHandler`` log them;
:class:`IterationLossTag` moves the per-iteration loss of ``--tracking mlflow`` to its own key (``train_loss_iter``).
"""

from __future__ import annotations

import glob
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.handlers import ValidationHandler as MonaiValidationHandler
from monai.utils import CommonKeys as Keys

from scripts.flags import as_optional_float

__all__ = [
    "DEFAULT_OUTPUT_MAP",
    "DEFAULT_TARGET_KEYS",
    "PrepareVLDUNBatch",
    "flatten_output",
    "VLDUNTrainer",
    "VLDUNEvaluator",
    "LossTermsHandler",
    "IterationLossTag",
    "TrackingParamsHandler",
    "TimeBudgetHandler",
    "ValidationHandler",
    "loss_terms",
    "class_pair",
]

#: network output key -> key in ``engine.state.output`` (other outputs, e.g. prior tokens, are dropped).
DEFAULT_OUTPUT_MAP: dict[str, str] = {
    "seg": "pred",
    "restored": "restored",
    "modality_logits": "modality_logits",
    "degradation_logits": "degradation_logits",
}

#: batch keys that are targets of the joint loss.
DEFAULT_TARGET_KEYS: tuple[str, ...] = ("target", "label", "modality", "degradation")


def _to_device(x: Any, device: Any, non_blocking: bool, **kwargs: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device=device, non_blocking=non_blocking, **kwargs)
    if isinstance(x, (int, float)) or (isinstance(x, Sequence) and x and isinstance(x[0], (int, float))):
        return torch.as_tensor(x, device=device)
    return x


class PrepareVLDUNBatch:
    """``prepare_batch`` for the engines: ``(batch[image_key], {k: batch[k] for k in target_keys if present})``.

    Tensors are moved to ``device``; integer class indices (lists or tensors) become tensors on ``device``.

    ``network_keys`` (e.g. ``("kspace", "mask")`` for known-operator data consistency) are batch entries passed to
    the network as keyword arguments (MONAI's engines call ``network(inputs, **kwargs)``); each must be in the batch.
    ``measurement_dropout`` drops them all from a training batch with that probability, so that one set of weights
    also serves the blind setting (use 0 for evaluation).
    """

    def __init__(
        self,
        image_key: str = "image",
        target_keys: Sequence[str] = DEFAULT_TARGET_KEYS,
        network_keys: Sequence[str] = (),
        measurement_dropout: float = 0.0,
    ) -> None:
        if not 0.0 <= float(measurement_dropout) <= 1.0:
            raise ValueError(f"measurement_dropout must be in [0, 1], got {measurement_dropout}.")
        self.image_key = image_key
        self.target_keys = tuple(target_keys)
        self.network_keys = tuple(network_keys)
        self.measurement_dropout = float(measurement_dropout)

    def __call__(
        self, batchdata: Mapping[str, Any], device: Any = None, non_blocking: bool = False, **kwargs: Any
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        if not isinstance(batchdata, Mapping):
            raise TypeError(f"PrepareVLDUNBatch expects a dict batch, got {type(batchdata).__name__}.")
        if self.image_key not in batchdata:
            raise KeyError(f"batch has no {self.image_key!r} key (keys: {sorted(batchdata)}).")
        image = _to_device(batchdata[self.image_key], device, non_blocking, **kwargs)
        targets = {
            k: _to_device(batchdata[k], device, non_blocking, **kwargs) for k in self.target_keys if k in batchdata
        }
        if not self.network_keys:
            return image, targets
        missing = [k for k in self.network_keys if k not in batchdata]
        if missing:
            raise KeyError(
                f"batch has no {missing} for the network (network_keys {list(self.network_keys)}); with "
                "data_consistency the degradation transform must emit them (kspace_key / mask_key)."
            )
        if self.measurement_dropout > 0 and float(torch.rand(())) < self.measurement_dropout:
            return image, targets, (), {}
        net_kwargs = {k: _to_device(batchdata[k], device, non_blocking) for k in self.network_keys}
        return image, targets, (), net_kwargs


def flatten_output(output: dict, output_map: Mapping[str, str] = DEFAULT_OUTPUT_MAP) -> dict:
    """Flatten a dict prediction and a dict of targets in an engine output (in place, also returned).

    ``output["pred"]`` (a dict) is replaced by its entries renamed with ``output_map`` (``seg`` -> ``pred``; when
    the network has no segmentation output ``pred`` is removed), and ``output["label"]`` (a dict of targets) by its
    entries. Tensor outputs and targets are left alone, so plain MONAI networks work too.
    """
    pred = output.get(Keys.PRED)
    if isinstance(pred, Mapping):
        del output[Keys.PRED]
        for k, v in pred.items():
            if k in output_map and v is not None:
                output[output_map[k]] = v
    targets = output.get(Keys.LABEL)
    if isinstance(targets, Mapping):
        del output[Keys.LABEL]
        for k, v in targets.items():
            output[k] = v
    return output


class VLDUNTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` for dict-output networks (same arguments, plus ``output_map`` and ``grad_clip_norm``).

    The loss receives the raw prediction dict and the target dict; after the loss, the output is flattened (see
    :func:`flatten_output`) and the loss terms of ``loss_function.last_terms`` are added.
    Defaults ``prepare_batch`` to :class:`PrepareVLDUNBatch`. ``attached_handlers`` lists ``train_handlers``, so
    that handlers can find each other (e.g. :class:`IterationLossTag` the ``MLFlowHandler``) without ignite's
    private handler table.

    ``grad_clip_norm``: clip the global L2 norm of the gradients to this value before each optimiser step
    (``torch.nn.utils.clip_grad_norm_``; with AMP the gradients are unscaled first). ``None`` (default) leaves the
    gradients as they are, so the training is the same computation as without the argument. The norm before
    clipping of the last step is ``engine.state.grad_norm``.
    """

    def __init__(
        self,
        *args: Any,
        output_map: Mapping[str, str] | None = None,
        grad_clip_norm: float | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("prepare_batch", PrepareVLDUNBatch())
        self.attached_handlers = tuple(kwargs.get("train_handlers") or ())
        try:
            value = as_optional_float(grad_clip_norm, "grad_clip_norm")  # `--grad_clip_norm null` arrives as a string
        except ValueError:
            value = math.nan
        if value is not None:
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"grad_clip_norm must be a positive finite number or null, got {grad_clip_norm!r}.")
            if int(kwargs.get("accumulation_steps", 1) or 1) > 1:
                # the event fires after every backward, so each partial sum would be clipped, not the step's gradient
                raise ValueError("grad_clip_norm cannot be combined with accumulation_steps > 1.")
        super().__init__(*args, **kwargs)
        self.output_map = dict(DEFAULT_OUTPUT_MAP if output_map is None else output_map)
        self.grad_clip_norm = value
        self.add_event_handler(IterationEvents.LOSS_COMPLETED, self._flatten)
        if value is not None:
            self.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self._clip_gradients)

    def _clip_gradients(self, engine: Engine) -> None:
        if self.amp and self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients; scaler.step then skips its own unscale
        params = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        engine.state.grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.grad_clip_norm))

    def _flatten(self, engine: Engine) -> None:
        out = engine.state.output
        flatten_output(out, self.output_map)
        for k, v in getattr(self.loss_function, "last_terms", {}).items():
            out[k] = v


class VLDUNEvaluator(SupervisedEvaluator):
    """``SupervisedEvaluator`` for dict-output networks: the output is flattened right after the forward pass,
    before decollation and post-processing. Defaults ``prepare_batch`` to :class:`PrepareVLDUNBatch`;
    ``attached_handlers`` lists ``val_handlers``."""

    def __init__(self, *args: Any, output_map: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("prepare_batch", PrepareVLDUNBatch())
        self.attached_handlers = tuple(kwargs.get("val_handlers") or ())
        super().__init__(*args, **kwargs)
        self.output_map = dict(DEFAULT_OUTPUT_MAP if output_map is None else output_map)
        self.add_event_handler(IterationEvents.FORWARD_COMPLETED, self._flatten)

    def _flatten(self, engine: Engine) -> None:
        flatten_output(engine.state.output, self.output_map)


def loss_terms(output: Any) -> dict[str, float]:
    """``output_transform`` giving ``{"loss": .., "loss_rec": .., ...}`` from a trainer output (dict or the list of
    decollated dicts, where the scalars are replicated), e.g. for ``StatsHandler``."""
    first = output[0] if isinstance(output, list) and output else output
    if not isinstance(first, Mapping):
        return {}
    return {
        k: float(v.detach() if isinstance(v, torch.Tensor) else v)  # the trainer's loss still holds its graph
        for k, v in first.items()
        if k == Keys.LOSS or str(k).startswith(f"{Keys.LOSS}_")
    }


class LossTermsHandler:
    """Average ``loss`` and every ``loss_*`` term over each epoch into ``engine.state.metrics[prefix + name]``.

    Attach it to the trainer before ``StatsHandler``/``TensorBoardStatsHandler``/``MLFlowHandler`` (they log
    ``engine.state.metrics`` at the end of each epoch).
    """

    def __init__(self, prefix: str = "train_") -> None:
        self.prefix = prefix
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._publish)

    def _reset(self, engine: Engine) -> None:
        self._sums, self._counts = {}, {}

    def _accumulate(self, engine: Engine) -> None:
        for k, v in loss_terms(engine.state.output).items():
            self._sums[k] = self._sums.get(k, 0.0) + v
            self._counts[k] = self._counts.get(k, 0) + 1

    def _publish(self, engine: Engine) -> None:
        for k, s in self._sums.items():
            engine.state.metrics[f"{self.prefix}{k}"] = s / max(self._counts[k], 1)


class ValidationHandler(MonaiValidationHandler):
    """MONAI's ``ValidationHandler`` that also validates after the last epoch when ``interval`` skips it.

    With ``val_interval`` 2, a run of ``--epochs 1`` (or any odd count) would otherwise end without validating its
    final weights, so without a best checkpoint (``model.pt``) and with a report on unselected weights. Iteration-level
    validation is unchanged. The class keeps MONAI's name, so configs that select handlers by class name (the
    multi-GPU overlay's ``all_rank_handlers``) treat it as the same handler.
    """

    def attach(self, engine: Engine) -> None:
        if not self.epoch_level:
            super().attach(engine)
            return
        interval = int(self.interval)

        def due(engine: Engine, epoch: int) -> bool:
            return epoch % interval == 0 or epoch == engine.state.max_epochs

        engine.add_event_handler(Events.EPOCH_COMPLETED(event_filter=due), self)
        if self.exec_at_start:
            engine.add_event_handler(Events.STARTED, self)


class TimeBudgetHandler:
    """Stop training before an epoch that would end past a wall-clock budget (``max_minutes`` in train.json).

    Checked at the end of every epoch, after the handlers attached before it (validation, checkpoints): training
    stops when the time used so far plus the longest epoch seen (validation included) would exceed the budget, so
    the run ends within it and the best and latest checkpoints are complete. The learning-rate schedule keeps its
    full ``epochs`` length (set ``epochs`` to what fits if the cosine should reach its end). The budget counts from
    this run's start (a resumed run gets a new budget). Under DistributedDataParallel rank 0 decides for all ranks
    (attach it on every rank).

    Args:
        minutes: the budget; ``None`` (or the command line's ``"null"``), <= 0 or infinity disables the handler; a
            value that is not a number is refused, naming ``max_minutes``.
        clock: seconds since an arbitrary origin (tests pass a fake clock).
    """

    def __init__(self, minutes: float | None, clock: Any = None) -> None:
        value = as_optional_float(minutes, "max_minutes")  # `--max_minutes null` arrives as a string
        self.seconds = None if value is None or value <= 0 or math.isinf(value) else 60.0 * value
        self.clock = clock or time.monotonic
        self.stopped_at_epoch: int | None = None

    def attach(self, engine: Engine) -> None:
        if self.seconds is None:
            return
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_start)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._check)

    def _start(self, engine: Engine) -> None:
        self._t0, self._longest = self.clock(), 0.0

    def _epoch_start(self, engine: Engine) -> None:
        self._te = self.clock()

    def _check(self, engine: Engine) -> None:
        now = self.clock()
        self._longest = max(self._longest, now - self._te)
        used = now - self._t0
        stop = engine.state.epoch < engine.state.max_epochs and used + self._longest > self.seconds
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # every rank must stop after the same epoch (a lone rank leaving would hang the others): rank 0 decides
            nccl = torch.distributed.get_backend() == "nccl"
            flag = torch.tensor([int(stop)], device=f"cuda:{torch.cuda.current_device()}" if nccl else "cpu")
            torch.distributed.broadcast(flag, src=0)
            stop = bool(flag.item())
        if stop:
            self.stopped_at_epoch = engine.state.epoch
            engine.logger.info(
                f"TimeBudgetHandler: stopping after epoch {engine.state.epoch} of {engine.state.max_epochs}: "
                f"{used / 60:.1f} min used, the next epoch (up to {self._longest / 60:.1f} min) would end past the "
                f"{self.seconds / 60:.1f} min budget"
            )
            engine.terminate()


def class_pair(logits_key: str, target_key: str):
    """``output_transform`` for ignite classification metrics (``Accuracy``): ``(logits (N, K), targets (N,))``
    stacked from a decollated evaluator output (or taken from an undecollated dict)."""

    def _transform(output: Any) -> tuple[torch.Tensor, torch.Tensor]:
        items = output if isinstance(output, list) else [output]
        logits, targets = [], []
        for o in items:
            p, t = torch.as_tensor(o[logits_key]), torch.as_tensor(o[target_key])
            logits.append(p.reshape(-1, p.shape[-1]).float())
            targets.append(t.reshape(-1).long().to(p.device))
        return torch.cat(logits), torch.cat(targets)

    return _transform


def _mlflow_handlers(engine: Engine) -> list:
    """The ``MLFlowHandler`` objects attached to ``engine``: those of the handlers the engine was built with
    (``attached_handlers`` of :class:`VLDUNTrainer` / :class:`VLDUNEvaluator`, where ``--tracking mlflow`` puts its
    handler) that ignite confirms as registered (``Engine.has_event_handler``)."""
    from monai.handlers import MLFlowHandler

    return [
        h
        for h in getattr(engine, "attached_handlers", ())
        if isinstance(h, MLFlowHandler) and engine.has_event_handler(h.start, Events.STARTED)
    ]


class IterationLossTag:
    """Log the per-iteration loss of the ``MLFlowHandler`` attached to the same engine under ``tag_name``.

    ``--tracking mlflow`` adds MONAI's default trainer ``MLFlowHandler``: it logs the iteration loss as
    ``train_loss`` (step = iteration) and, at each epoch end, ``engine.state.metrics`` (step = epoch), where
    :class:`LossTermsHandler` puts the epoch mean, also named ``train_loss``. One MLflow key then held two series
    in two step units and its chart zig-zagged. Renaming the iteration series when the run starts leaves
    ``train_loss`` to the epoch mean, like ``train_loss_rec``, ... Does nothing without such a handler; a handler
    whose ``output_transform`` returns a dict names its own keys and is left alone.
    """

    def __init__(self, tag_name: str = "train_loss_iter") -> None:
        self.tag_name = tag_name

    def attach(self, engine: Engine) -> None:
        # STARTED runs before any ITERATION_COMPLETED, also for a resumed run (which starts past iteration 1)
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        for handler in _mlflow_handlers(engine):
            handler.tag_name = self.tag_name


class TrackingParamsHandler:
    """Log ``params`` (a flat dict of run settings) to the MLflow run of an ``MLFlowHandler`` attached to the same
    engine (as ``--tracking mlflow`` does), once, at the first iteration. Does nothing without such a handler.

    With ``config_dir``, the newest ``config_*.json`` there (the executed config that ``--tracking`` writes into
    ``output_dir``) is also logged as an artifact. MONAI's own handler misses it when ``output_dir`` is overridden
    with a plain path on the command line (it then builds the path ``"<dir> + '/config_....json'"``).
    """

    def __init__(self, params: Mapping[str, Any], config_dir: str | None = None) -> None:
        self.params = {str(k): v for k, v in dict(params).items()}
        self.config_dir = config_dir
        self.logged = False

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_STARTED(once=1), self)

    def __call__(self, engine: Engine) -> None:
        for owner in _mlflow_handlers(engine):
            if owner.cur_run is not None:
                import mlflow.entities

                run_id = owner.cur_run.info.run_id
                existing = owner.client.get_run(run_id).data.params
                batch = [mlflow.entities.Param(k, str(v)[:6000]) for k, v in self.params.items() if k not in existing]
                if batch:
                    owner.client.log_batch(run_id=run_id, params=batch)
                if self.config_dir:
                    configs = sorted(glob.glob(os.path.join(self.config_dir, "config_*.json")), key=os.path.getmtime)
                    if configs:
                        owner.client.log_artifact(run_id, configs[-1])
                self.logged = True
