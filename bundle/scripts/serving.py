"""MONAI Label specific pieces of the bundle (MONAI Label 0.8.5, ``monaibundle`` app). See ``docs/monailabel.md``.

How the bundle meets MONAI Label's ``BundleInferTask`` / ``BundleTrainTask`` (``docs/monailabel.md``):

- **Segmentation** (``/infer/<name>``): ``configs/inference.json`` as it is. Its ``network_def`` returns the
  segmentation tensor alone (``output="seg"``: what the metadata's ``pred``, ``verify_net_in_out`` and exports
  describe); :class:`NetworkOutputInferer` asks the same network for its dict output (segmentation and restored
  image); ``SplitPredictiond`` leaves the segmentation in ``pred`` (what MONAI Label writes as the result image) and
  the restored image in ``restored``; ``SaveRestoredd`` writes the restored volume and puts its path in
  ``d["result"]["restored"]``, which MONAI Label returns as the JSON part of the answer (option (a)).
- **Restored image as the result** (``/infer/<restore name>``, option (c)): ``configs/inference_restore.json``,
  merged over ``inference.json`` by ``tools/monailabel_app.py``, appends :class:`RestoredAsPredd`, which moves the
  restored volume into ``pred`` so that MONAI Label returns it as the image.
- **Training** (``/train/<name>``): the datastore gives only ``{image, label}`` pairs; ``train.json``'s preprocessing
  derives the degraded input and the clean target itself (k-space undersampling of the clean image) and defaults
  the modality. MONAI Label splits off 20% of the labelled images for validation, which leaves *no* validation
  data while fewer than three images are labelled; the validation-driven ``model.pt`` saver then never runs.
  :class:`SaveIfNotValidated` (a trainer handler) writes ``model.pt`` at the end of such a run, so the next
  ``/infer`` uses the newly trained weights, and rewrites its provenance record ``model.pt.json`` (otherwise the
  record of an earlier run would describe other weights; ``tools/package_bundle.py`` checks it).

- **Errors** (``/infer``, ``/datastore/image``): the app's ``main.py`` (``tools/monailabel_main.py``) asks
  :func:`study_problem` about each study before storing or inferring it, and reports any other failure with
  :func:`failure_message`, so the client gets a 4xx/5xx whose ``detail`` says what was wrong with which image.

Custom code must stay stateless at module level: MONAI Label unloads and re-imports ``scripts`` on every call.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.config import KeysCollection
from monai.inferers import Inferer
from monai.transforms import MapTransform

from scripts.workflows.checkpoint import save_atomic, unwrap_module, write_weights_record
from scripts.workflows.io import InputScreen

__all__ = [
    "NetworkOutputInferer",
    "RestoredAsPredd",
    "SaveIfNotValidated",
    "failure_message",
    "study_problem",
    "with_output",
]

logger = logging.getLogger(__name__)


def with_output(network: Callable, output: str) -> Callable:
    """``network`` returning ``output`` (``"dict"``, ``"seg"`` or ``"restored"``) for this call, without changing
    ``network`` itself: a shallow copy that shares every parameter, buffer and sub-module and differs only in its
    ``output`` attribute. Safe with concurrent callers (MONAI Label hands one cached network to every request).
    Networks without an ``output`` mode (e.g. TorchScript) are returned unchanged."""
    if not hasattr(network, "set_output") or getattr(network, "output", output) == output:
        return network
    view = copy.copy(network)
    view.set_output(output)
    return view


def study_problem(path: str | os.PathLike, name: str | None = None) -> str | None:
    """Why the study ``path`` cannot be served, in the words of the command-line inference's screen
    (:class:`scripts.workflows.io.InputScreen`: unreadable, corrupt or truncated, 4D, several channels, NaN/Inf), or
    ``None`` if it can. ``name`` replaces the path in the message: uploads and posted files arrive under a temporary
    file name that means nothing to the client."""
    errors = InputScreen([{"image": str(path)}], keys="image").errors
    if not errors:
        return None
    return errors[0].replace(str(path), name) if name else errors[0]


def failure_message(exc: BaseException) -> str:
    """The innermost error of ``exc``'s chain as ``"Type: message"``: MONAI wraps an error raised inside a transform
    in ``RuntimeError("applying transform ...")`` and ``ConfigExpression`` failures in another layer, whose own text
    names the wrapper, not the problem."""
    seen = {id(exc)}
    while (exc.__cause__ or exc.__context__) is not None and id(exc.__cause__ or exc.__context__) not in seen:
        exc = exc.__cause__ or exc.__context__
        seen.add(id(exc))
    text = str(exc).strip() or "(no message)"
    return f"{type(exc).__name__}: {text[:1000]}"


class NetworkOutputInferer(Inferer):
    """Run ``inferer`` with the network switched to ``output`` (default ``"dict"``: segmentation and restored image).

    ``inference.json``'s ``network_def`` returns the segmentation tensor alone (``output="seg"``), which is what
    ``verify_net_in_out``, exports and the metadata's first output (``pred``) describe; this inferer lets the same
    network produce both outputs for the inference workflow and MONAI Label.
    """

    def __init__(self, inferer: Callable[..., Any], output: str = "dict") -> None:
        super().__init__()
        self.inferer = inferer
        self.output = output

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.inferer(inputs, with_output(network, self.output), *args, **kwargs)


class RestoredAsPredd(MapTransform):
    """Put the restored image (``d[source]``) under ``d[key]`` (``pred``: the image MONAI Label writes and returns).

    The segmentation that was in ``pred`` is kept under ``seg_key`` (``None`` drops it). The restored image must
    already be in the input's geometry (run it after ``Invertd``) and intensity units (after
    ``InverseIntensityMapd``); a channel dimension of size 1 is kept (MONAI Label's ``Restored`` removes it).
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        source: str = "restored",
        seg_key: str | None = "seg",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.source = source
        self.seg_key = seg_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        if self.source not in d:
            raise KeyError(f"RestoredAsPredd: no {self.source!r} in the data (keys: {sorted(map(str, d))}).")
        for key in self.keys:
            if self.seg_key and key in d:
                d[self.seg_key] = d[key]
            d[key] = d[self.source]
        return d


class SaveIfNotValidated:
    """Trainer handler: when training completes and the validator has not evaluated any data during the run (an
    empty validation list, as MONAI Label gives while fewer than three images are labelled), save the network's
    plain ``state_dict`` to ``<save_dir>/<filename>`` (atomically; loadable with ``weights_only=True``) and its
    provenance record ``<filename>.json`` (no metric: nothing was validated).

    With validation data the validation-driven saver (``BestModelSaver``) owns ``model.pt`` and this handler does
    nothing.

    Args:
        save_dir: checkpoint folder (the bundle's ``models``).
        network: the trained network (DDP is unwrapped).
        validator: the validation evaluator (its ``state.iteration`` tells whether it processed any batch).
        filename: checkpoint file name (``model.pt``: what MONAI Label loads).
        record: extra entries of the record (``scripts.workflows.runs.run_record``: the run folder, data, config).
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        network: torch.nn.Module,
        validator: Engine | None = None,
        filename: str = "model.pt",
        record: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(save_dir) / filename
        self.record = dict(record or {})
        self.network = network
        self.validator = validator
        self.saved: Path | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def validated(self) -> bool:
        if self.validator is None:
            return False
        state = getattr(self.validator, "state", None)
        return bool(state is not None and getattr(state, "iteration", 0) and getattr(state, "epoch_length", 0))

    def __call__(self, engine: Engine) -> None:
        if self.validated():
            return
        state = {k: v.detach().cpu().clone() for k, v in unwrap_module(self.network).state_dict().items()}
        self.saved = save_atomic(state, self.path)
        write_weights_record(
            self.path,
            {
                "metric": None,
                "value": None,
                "epoch": int(engine.state.epoch),
                "saved_by": "SaveIfNotValidated: end of a training run without validation data (MONAI Label /train)",
                **self.record,
            },
        )
        logger.info(f"SaveIfNotValidated: no validation data in this run; saved the final weights to {self.path}")
