"""Input listing, output writing and report helpers for the bundle workflows.

- :func:`list_inputs` / :func:`inference_datalist`: the cases of an inference run (files of a folder, DICOM series
  sub-folders, explicit file lists or a datalist JSON); an empty folder is an error naming the folder.
- :class:`InputScreen`, :class:`CheckCased`, :class:`InputError`: the checks of each case before or as it is used
  (``screening.py``; importable from here, as the configs name them).
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
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, SaveImage

from .screening import CheckCased, InputError, InputScreen

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
