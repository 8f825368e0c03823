"""Run folders: every training, evaluation and inference run writes into a folder of its own.

- :func:`new_run_dir` creates ``<root>/<run_name>`` (``run_name`` defaults to a timestamp in the configs) and never
  reuses an existing folder: a second run with the same name gets ``<run_name>-2``, ``-3``, ... Under
  ``torch.distributed`` rank 0 chooses the folder and the other ranks receive its name, so that every rank logs into
  the same place even when their clocks cross a second boundary.
- :func:`executed_config` rebuilds what MONAI ran from a ``python -m monai.bundle run`` command line: the merged
  ``--config_file`` file(s) with the command-line (and ``--args_file``) overrides applied.
- :class:`RunFolder` (attached to the trainer or evaluator) writes that config and the command line into the run
  folder when the engine starts, and logs the folder.
- :func:`run_record` is what ``model.pt.json`` records about the run that produced the weights: run name and
  folder, the datalist (when the trained cases came from it), the number of cases and the saved config.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from .distributed import is_main_process

__all__ = ["new_run_dir", "executed_config", "RunFolder", "run_record", "CONFIG_NAME", "COMMAND_NAME"]

logger = logging.getLogger(__name__)

#: file names written into every run folder
CONFIG_NAME = "config.json"
COMMAND_NAME = "command.txt"


def _timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _create_unique(root: Path, name: str) -> Path:
    for i in range(1, 10_000):
        path = root / (name if i == 1 else f"{name}-{i}")
        try:
            path.mkdir(parents=True, exist_ok=False)  # atomic: two runs started together cannot both get it
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run folder for {name!r} under {str(root)!r}: 9999 exist already.")


def new_run_dir(root: str | os.PathLike, name: str | None = None) -> str:
    """Create and return a new folder ``<root>/<name>`` (``name`` empty: a timestamp), suffixed ``-2``, ``-3``, ...
    when that folder exists already."""
    name = str(name).strip() if name is not None else ""
    if not name:
        name = _timestamp()
    if os.sep in name or (os.altsep and os.altsep in name) or name in (".", ".."):
        raise ValueError(f"run_name {name!r} must be a plain folder name (it is created under {str(root)!r}).")
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        chosen = [str(_create_unique(Path(root), name)) if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(chosen, src=0)
        Path(chosen[0]).mkdir(parents=True, exist_ok=True)
        return str(chosen[0])
    return str(_create_unique(Path(root), name))


def executed_config(argv: Sequence[str] | None = None) -> tuple[dict[str, Any], list[str]] | None:
    """``(config, config_files)`` of a ``python -m monai.bundle run`` command line (``argv``, default ``sys.argv``):
    the merged config files with the overrides applied, as MONAI's ``ConfigWorkflow`` builds it. ``None`` for any
    other program (MONAI Label and tests run the configs in-process with overrides this process cannot see)."""
    from monai.bundle import ConfigParser

    from ..cli import _run_arguments, is_bundle_run, parse_cli_args

    argv = list(sys.argv if argv is None else argv)
    if not is_bundle_run(argv):
        return None
    run_args = _run_arguments()
    cli = parse_cli_args(argv[2:], named=run_args)
    given = dict(ConfigParser.load_config_file(cli["args_file"])) if cli.get("args_file") else {}
    given.update(cli)
    files = given.get("config_file")
    if not files:
        return None
    files = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    parser = ConfigParser()
    parser.read_config(files)
    parser.update({k: v for k, v in given.items() if k not in run_args})
    return parser.get(), [str(f) for f in files]


class RunFolder:
    """Record a run in its folder when the engine starts: ``config.json`` (the executed config, see
    :func:`executed_config`) and ``command.txt`` (the command line). A run started in-process (MONAI Label, tests)
    has no command line to rebuild the config from: ``config.json`` then holds the config files named in
    ``fallback_files`` and a note saying that the caller's overrides are not included.

    Args:
        run_dir: the run folder (created if missing).
        fallback_files: config file(s) of the workflow, for in-process runs.
        argv: the command line (default ``sys.argv``; tests pass their own).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        fallback_files: Sequence[str] | str | None = None,
        argv: Sequence[str] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.fallback_files = [fallback_files] if isinstance(fallback_files, str) else list(fallback_files or [])
        self.argv = None if argv is None else list(argv)
        self.config_path = self.run_dir / CONFIG_NAME

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def write(self) -> Path:
        from monai.bundle import ConfigParser

        self.run_dir.mkdir(parents=True, exist_ok=True)
        argv = list(sys.argv if self.argv is None else self.argv)
        found = executed_config(argv)
        if found is not None:
            config, _ = found
            (self.run_dir / COMMAND_NAME).write_text(shlex.join(argv) + "\n")
        else:
            parser = ConfigParser()
            existing = [f for f in self.fallback_files if os.path.isfile(f)]
            if existing:
                parser.read_config(existing)
            config = parser.get()
            config["_run_note_"] = (
                f"run in-process by {os.path.basename(argv[0]) if argv else 'python'}: the config file(s) "
                f"{existing}, without the caller's overrides"
            )
        ConfigParser.export_config_file(config, str(self.config_path), indent=4)
        return self.config_path

    def __call__(self, engine: Engine) -> None:
        if not is_main_process():
            return
        self.write()
        logger.info(f"run folder: {self.run_dir} (executed config: {self.config_path.name})")


def _image_paths(data: Sequence[Any] | None) -> set[str]:
    out = set()
    for item in data or []:
        if isinstance(item, Mapping) and isinstance(item.get("image"), (str, os.PathLike)):
            out.add(os.path.abspath(str(item["image"])))
    return out


def run_record(
    run_dir: str | os.PathLike,
    datalist: Any = None,
    train_data: Sequence[Any] | None = None,
    val_data: Sequence[Any] | None = None,
    datalist_key: str = "training",
) -> dict[str, Any]:
    """The run's entry of a weights record (``model.pt.json``).

    ``datalist`` is named only when the training cases are that datalist's ``datalist_key`` section; a caller that
    passes its own cases (MONAI Label sets ``train#dataset#data``) is recorded as such, with the case count.
    """
    run_dir = Path(run_dir)
    source = None
    if isinstance(datalist, (str, os.PathLike)) and os.path.isfile(datalist):
        from monai.data import load_decathlon_datalist

        try:
            listed = load_decathlon_datalist(
                str(datalist), True, datalist_key, os.path.dirname(os.path.abspath(datalist))
            )
        except (KeyError, ValueError):
            listed = []
        given = _image_paths(train_data)
        if given and given <= _image_paths(listed):
            source = os.path.abspath(str(datalist))
    return {
        "run_name": run_dir.name,
        "run_dir": str(run_dir),
        "config": str(run_dir / CONFIG_NAME),
        "datalist": source,
        "data": (
            f"the {datalist_key!r} section of the datalist"
            if source
            else "cases given by the caller (train#dataset#data, e.g. MONAI Label's datastore)"
        ),
        "train_cases": None if train_data is None else len(train_data),
        "val_cases": None if val_data is None else len(val_data),
    }
