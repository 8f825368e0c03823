"""Input listing and screening, output writing and report helpers for the bundle workflows.

- :func:`list_inputs` / :func:`inference_datalist`: the cases of an inference run (files of a folder, DICOM series
  sub-folders, explicit file lists or a datalist JSON); an empty folder is an error naming the folder.
- :class:`InputScreen`: loads every case once before the run and sets aside the ones that cannot be processed
  (unreadable, corrupt or truncated files, 4D data, several channels, NaN/Inf voxels, empty images) with a
  message naming the file; the other cases are processed, and :meth:`InputScreen.raise_if_failed` ends the run with
  the list of rejected files.
- :class:`CheckCased`: the same checks on each training / evaluation case as it is loaded, plus label values within
  ``0 .. num_classes - 1``; a bad case stops the run with a message naming the file (a wrong label value otherwise
  surfaces deep inside the loss as ``index 7 is out of bounds``, a 4D volume as a channel mismatch).
- :class:`SaveRestoredd`: writes the restored image next to the segmentation (``<name>_restored.nii.gz``) and puts
  its path into ``d["result"]["restored"]`` (MONAI Label returns ``d["result"]`` as the JSON part of its answer).
- :func:`case_meta`: per-case names ``<file stem>[_s<slice>]`` for ``MetricsSaver``.
- :func:`load_datalist`: ``monai.data.load_decathlon_datalist`` that stops on a missing or empty split with a
  message naming the datalist file, the split and the option to change (instead of the DataLoader's
  ``num_samples=0``).
"""

from __future__ import annotations

import glob
import json
import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImage, MapTransform, SaveImage

__all__ = [
    "IMAGE_EXTENSIONS",
    "InputError",
    "list_inputs",
    "inference_datalist",
    "InputScreen",
    "CheckCased",
    "SaveRestoredd",
    "case_name",
    "case_meta",
    "DatalistError",
    "load_datalist",
]

logger = logging.getLogger(__name__)

#: file name endings read as one case each (NIfTI via nibabel, the rest via ITK or PIL).
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".nii.gz",
    ".nii",
    ".mha",
    ".mhd",
    ".nrrd",
    ".nhdr",
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".dcm",
)
_DICOM_SUFFIXES = (".dcm", ".ima", "")


class InputError(RuntimeError):
    """Raised at the end of a run when some inputs were rejected (the message lists them)."""


def _is_image_file(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS) and not p.name.startswith(".")


def _is_dicom_series(p: Path) -> bool:
    if not p.is_dir():
        return False
    files = [f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")]
    return bool(files) and all(f.suffix.lower() in _DICOM_SUFFIXES for f in files)


def list_inputs(input_dir: str | os.PathLike, pattern: str | None = None) -> list[str]:
    """Image files (sorted) of ``input_dir`` (or matching ``pattern`` inside it), plus its sub-folders that hold a
    DICOM series (read by ITK as one volume). Raises ``FileNotFoundError`` naming the folder when there are none."""
    root = Path(input_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"input folder {str(root)!r} does not exist.")
    if pattern:
        found = sorted(Path(p) for p in glob.glob(str(root / pattern)))
        cases = [str(p) for p in found if _is_image_file(p) or _is_dicom_series(p)]
    else:
        entries = sorted(root.iterdir())
        cases = [str(p) for p in entries if _is_image_file(p) or _is_dicom_series(p)]
        if not cases and entries and all(p.is_file() and p.suffix.lower() in (".dcm", ".ima") for p in entries):
            cases = [str(root)]  # the folder itself is one DICOM series
    if not cases:
        raise FileNotFoundError(
            f"no input images found in {str(root)!r}"
            + (f" matching {pattern!r}" if pattern else "")
            + f" (looked for {', '.join(IMAGE_EXTENSIONS)} files and DICOM series folders)."
        )
    return cases


def inference_datalist(
    input_dir: str | os.PathLike | None = None,
    files: Sequence[str] | str | None = None,
    datalist: str | os.PathLike | None = None,
    datalist_key: str = "test",
    pattern: str | None = None,
    image_key: str = "image",
) -> list[dict[str, str]]:
    """The inference cases as ``[{"image": path}, ...]``.

    Exactly one source is used, in this order: ``files`` (a list of paths, or one path), ``input_dir`` (see
    :func:`list_inputs`), or a decathlon-style ``datalist`` JSON (its ``datalist_key`` section; relative paths are
    resolved against the JSON's folder).
    """
    if files:
        items = [files] if isinstance(files, (str, os.PathLike)) else list(files)
        return [{image_key: str(Path(f).expanduser())} for f in items]
    if input_dir:
        return [{image_key: p} for p in list_inputs(input_dir, pattern)]
    if datalist:
        path = Path(datalist).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"datalist {str(path)!r} does not exist.")
        content = json.loads(path.read_text())
        if datalist_key not in content or not content[datalist_key]:
            raise ValueError(f"datalist {str(path)!r} has no (or an empty) {datalist_key!r} section.")
        out = []
        for item in content[datalist_key]:
            f = item[image_key] if isinstance(item, Mapping) else item
            f = Path(f) if os.path.isabs(f) else path.parent / f
            out.append({image_key: str(f)})
        return out
    raise ValueError("no inference input: set input_dir, files or datalist.")


def _describe_problem(img: Any, allow_nan: bool) -> str | None:
    """Why a loaded channel-first image cannot be processed (``None`` if it can)."""
    shape = tuple(int(s) for s in img.shape)
    channels, spatial = shape[0], shape[1:]
    if channels != 1 or len(spatial) > 3:
        return (
            f"is {len(spatial) + (channels > 1)}D data (loaded as {channels} channel(s) x {spatial}); "
            "expected one 3D volume or one single-channel 2D image"
        )
    if len(spatial) < 2:
        return f"has shape {spatial}; expected a 3D volume or a 2D image"
    if int(np.prod(spatial)) == 0:
        return f"is empty (shape {spatial})"
    t = torch.as_tensor(img)
    if not allow_nan and t.is_floating_point():
        n_nan, n_inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
        if n_nan or n_inf:
            return f"contains {n_nan} NaN and {n_inf} infinite voxels"
    return None


class InputScreen:
    """Load each case once and split the cases into processable (:attr:`good`) and rejected (:attr:`errors`).

    Args:
        data: the cases (``[{"image": path}, ...]``).
        keys: the keys whose files are checked.
        reader: optional MONAI image reader (name or instance) passed to ``LoadImage``.
        allow_nan: accept NaN/Inf voxels (default: reject them).
    """

    def __init__(
        self,
        data: Sequence[Mapping[str, Any]],
        keys: KeysCollection = ("image",),
        reader: Any = None,
        allow_nan: bool = False,
    ) -> None:
        self.keys = (keys,) if isinstance(keys, str) else tuple(keys)
        self.good: list[dict] = []
        self.errors: list[str] = []  # "<file>: <problem>"
        self.rejected: list[tuple[str, str]] = []  # (file, problem)
        loader = LoadImage(reader=reader, image_only=True, ensure_channel_first=True)
        for item in data:
            problem = None
            for k in self.keys:
                path = str(item.get(k, ""))
                if not path:
                    problem = (f"case {dict(item)}", f"has no {k!r} entry")
                    break
                if not os.path.exists(path):
                    problem = (path, "file not found")
                    break
                try:
                    img = loader(path)
                except Exception as e:  # corrupt, truncated, unsupported: every reader raises differently
                    msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                    problem = (path, f"cannot be read ({type(e).__name__}: {msg[:300]})")
                    break
                reason = _describe_problem(img, allow_nan)
                if reason:
                    problem = (path, reason)
                    break
            if problem:
                logger.error(f"skipping input: {problem[0]}: {problem[1]}")
                self.rejected.append(problem)
                self.errors.append(f"{problem[0]}: {problem[1]}")
            else:
                self.good.append(dict(item))
        if self.errors:
            logger.error(f"{len(self.errors)} of {len(data)} inputs rejected; the other {len(self.good)} are processed")

    def summary(self) -> str:
        """The rejected inputs as a table (file, problem), for the end of the run."""
        width = min(max(len("file"), *(len(f) for f, _ in self.rejected)), 100)
        lines = [f"{'file':<{width}}  problem"] + [f"{f:<{width}}  {p}" for f, p in self.rejected]
        head = f"{len(self.errors)} input(s) could not be processed (the other {len(self.good)} were written)"
        return f"{head}:\n  " + "\n  ".join(lines)

    def raise_if_failed(self) -> None:
        """End the run listing the rejected files (call it after the run): in a ``python -m monai.bundle run``
        command as a table on stderr with exit status 1 and no traceback, elsewhere as :class:`InputError`."""
        if self.errors:
            from scripts.cli import fail

            fail(InputError(self.summary()))


def _label_problem(label: Any, num_classes: int | None) -> str | None:
    """Why a label map cannot be a target of ``num_classes`` classes (``None`` if it can)."""
    values = torch.unique(torch.as_tensor(label).detach().cpu())
    if values.is_floating_point():
        fractional = values[values != torch.round(values)]
        if fractional.numel():
            return f"has non-integer label values, e.g. {fractional[:5].tolist()}"
    if num_classes is None:
        return None
    bad = values[(values < 0) | (values >= int(num_classes))]
    if not bad.numel():
        return None
    shown = [int(v) for v in bad[:10].tolist()]
    more = f" and {bad.numel() - 10} more" if bad.numel() > 10 else ""
    return (
        f"has label value(s) {shown}{more} outside the classes 0..{int(num_classes) - 1} (num_classes {num_classes}); "
        "remap the labels or set --num_classes"
    )


class CheckCased(MapTransform):
    """Stop on a loaded case that cannot be trained or evaluated, naming the file and what is wrong with it.

    Each image under ``keys`` must be one channel of a 2D image or a 3D volume (a 4D NIfTI loads as several
    channels and is named with its shape) without NaN/Inf values, as :class:`InputScreen` requires for inference;
    the label under ``label_key`` must hold integer values in ``0 .. num_classes - 1`` (``num_classes`` ``None``:
    any integers). Put it right after ``LoadImaged`` (with ``ensure_channel_first``): training caches the result,
    so each case is checked once.

    Raises:
        ValueError: ``"<file>: <reason>"``.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        label_key: str | None = "label",
        num_classes: int | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_key = label_key
        self.num_classes = None if num_classes is None else int(num_classes)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            problem = _describe_problem(img, allow_nan=False)
            if problem is None and key == self.label_key:
                problem = _label_problem(img, self.num_classes)
            if problem:
                meta = getattr(img, "meta", None) or d.get(f"{key}_meta_dict") or {}
                name = meta.get("filename_or_obj") or f"the {key!r} of case {d.get('sample_id', '?')}"
                raise ValueError(f"{key} file {name}: {problem}.")
        return d


class SaveRestoredd(MapTransform):
    """Save ``d[key]`` (the restored image) as ``<output_dir>/<name><output_postfix><ext>`` and record the path in
    ``d["result"][key]``. Writes with MONAI's ``SaveImage`` (same writers, affine and dtype handling as
    ``SaveImaged``); put it after ``Invertd`` so the image has the input's shape and affine.
    """

    def __init__(
        self,
        keys: KeysCollection = "restored",
        output_dir: str | os.PathLike = "./eval",
        output_postfix: str = "restored",
        output_ext: str = ".nii.gz",
        output_dtype: Any = np.float32,
        resample: bool = False,
        separate_folder: bool = False,
        result_key: str = "result",
        meta_key: str = "image",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.result_key = result_key
        self.meta_key = meta_key
        self.saver = SaveImage(
            output_dir=str(output_dir),
            output_postfix=output_postfix,
            output_ext=output_ext,
            output_dtype=output_dtype,
            resample=resample,
            separate_folder=separate_folder,
            print_log=False,
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            meta = dict(img.meta) if isinstance(img, MetaTensor) else {}
            ref = d.get(self.meta_key)
            if not meta.get("filename_or_obj") and isinstance(ref, MetaTensor):
                meta = dict(ref.meta)
            path = self.saver.folder_layout.filename(**self.saver.fname_formatter(meta, self.saver))
            self.saver(img, meta_data=meta)
            result = dict(d.get(self.result_key) or {})
            result[str(key)] = str(path)
            d[self.result_key] = result
        return d


def case_name(meta: Mapping[str, Any], slice_index: Any = None) -> str:
    """``<file stem>`` or ``<file stem>_s<slice>`` from a meta dict."""
    name = os.path.basename(str(meta.get("filename_or_obj", "case")))
    for ext in sorted(IMAGE_EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    si = meta.get("slice_index", slice_index)
    if si is not None and not (isinstance(si, str) and not si):
        si = int(torch.as_tensor(si).reshape(-1)[0])
        name = f"{name}_s{si:03d}"
    return name


def case_meta(batch: Any, key: str = "image") -> list[dict[str, str]]:
    """``batch_transform`` for ``MetricsSaver``: one ``{"filename_or_obj": name}`` per item of a decollated batch,
    ``name`` being the ``sample_id`` set by the slice samplers (``<file stem>_s<slice>``) or else derived from the
    image metadata, so that the per-case metric rows are named after the slice."""
    items = batch if isinstance(batch, list) else [batch]
    out = []
    for b in items:
        if b.get("sample_id"):
            out.append({"filename_or_obj": str(b["sample_id"])})
            continue
        x = b.get(key)
        meta = dict(x.meta) if isinstance(x, MetaTensor) else dict(b.get(f"{key}_meta_dict", {}))
        out.append({"filename_or_obj": case_name(meta, b.get("slice_index"))})
    return out


class DatalistError(ValueError):
    """A datalist split that cannot feed a workflow (missing or empty)."""


def load_datalist(
    path: str | os.PathLike,
    split: str,
    base_dir: str | os.PathLike | None = None,
    option: str | None = None,
    is_segmentation: bool = True,
) -> list[dict]:
    """The ``split`` entries of the datalist JSON ``path`` (``monai.data.load_decathlon_datalist``), paths resolved
    against ``base_dir``; a missing or empty split stops the run before any training with a message naming the file,
    the split and how to fix it (otherwise MONAI's DataLoader fails later with ``num_samples=0``).

    Args:
        option: the config id that chose ``split`` (e.g. ``"val_split"``), named in the message as ``--<option>``.

    Raises:
        DatalistError: in a ``python -m monai.bundle run`` command as ``error: ...`` on stderr, exit status 1.
    """
    from monai.data import load_decathlon_datalist

    path = str(path)
    hint = f"pass --{option} <key>" if option else "choose another split"
    try:
        with open(path) as f:
            content = json.load(f)
    except FileNotFoundError:
        return _fail_datalist(f"datalist {path} not found; pass --datalist <file> or --demo_dir <folder>")
    except (OSError, json.JSONDecodeError) as e:
        return _fail_datalist(f"datalist {path} cannot be read as JSON ({type(e).__name__}: {e})")
    keys = sorted(k for k, v in content.items() if isinstance(v, list)) if isinstance(content, dict) else []
    entries = content.get(split) if isinstance(content, dict) else None
    if not isinstance(entries, list):
        return _fail_datalist(
            f"datalist {path} has no {split!r} split (lists: {keys or 'none'}); add a {split!r} list of "
            f"{{'image': ..., 'label': ...}} entries or {hint}"
        )
    if not entries:
        return _fail_datalist(
            f"datalist {path} has no {split!r} entries (the list is empty; non-empty lists: "
            f"{[k for k in keys if content[k]] or 'none'}); add some or {hint}"
        )
    return load_decathlon_datalist(path, is_segmentation=is_segmentation, data_list_key=split, base_dir=base_dir)


def _fail_datalist(message: str) -> list[dict]:
    from scripts.cli import fail

    fail(DatalistError(message))
    return []  # pragma: no cover - fail() raises
