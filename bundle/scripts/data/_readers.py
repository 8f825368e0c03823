"""Cheap readers for the converters: shapes and spacings from headers, label values, integrity checks.

NIfTI: ``nibabel.load`` parses the header only (the voxel data stay on disk), so shape and spacing cost one
small read per file. A truncated ``.nii.gz`` is detected without decompressing it, from the gzip trailer
(ISIZE = uncompressed size mod 2**32) compared with the size the header implies; only files failing that cheap
check are decompressed to confirm. PNG: Pillow reads the size and mode from the header.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NIFTI_SUFFIXES = (".nii.gz", ".nii")
PNG_SUFFIXES = (".png",)
SUPPORTED_SUFFIXES = NIFTI_SUFFIXES + PNG_SUFFIXES


class DataPreparationError(ValueError):
    """Raised for malformed input; the message names every offending file."""


@dataclass(frozen=True)
class ImageInfo:
    shape: tuple[int, ...]  # spatial shape first (NIfTI x, y, z[, channels]; PNG rows, cols)
    spacing: tuple[float, ...] | None  # mm, NIfTI only
    dtype: str
    mode: str = ""  # PIL mode for PNG


def strip_suffix(name: str) -> str:
    for suf in SUPPORTED_SUFFIXES:
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return name


def is_supported(name: str) -> bool:
    return name.lower().endswith(SUPPORTED_SUFFIXES) and not name.startswith(".")


def _gzip_isize(path: Path) -> int | None:
    size = path.stat().st_size
    if size < 18:
        return None
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        return struct.unpack("<I", f.read(4))[0]


def read_info(path: str | os.PathLike, verify: bool = True) -> ImageInfo:
    """Shape, spacing and dtype of an image from its header; ``DataPreparationError`` if unreadable.

    With ``verify`` the file is also checked for truncation (NIfTI: file or gzip trailer size vs. header;
    PNG: chunk CRCs via ``Image.verify``).
    """
    path = Path(path)
    name = path.name.lower()
    if not path.is_file():
        raise DataPreparationError(f"file not found: {path}")
    if name.endswith(NIFTI_SUFFIXES):
        return _nifti_info(path, verify)
    if name.endswith(PNG_SUFFIXES):
        return _png_info(path, verify)
    raise DataPreparationError(f"unsupported file type: {path} (supported: {', '.join(SUPPORTED_SUFFIXES)})")


def _nifti_info(path: Path, verify: bool) -> ImageInfo:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        hdr = img.header
        shape = tuple(int(s) for s in img.shape)
        zooms = tuple(float(z) for z in hdr.get_zooms()[:3])
        dtype = str(hdr.get_data_dtype())
    except Exception as e:  # nibabel raises ImageFileError, EOFError, OSError, zlib.error, ...
        raise DataPreparationError(f"unreadable or corrupt NIfTI file {path}: {type(e).__name__}: {e}") from e
    if verify:
        # the loaded image's header copy may report offset 0: the array proxy knows the real one
        offset = getattr(img.dataobj, "offset", None)
        offset = int(hdr["vox_offset"]) if offset is None else int(offset)
        expected = offset + int(np.prod(shape)) * np.dtype(hdr.get_data_dtype()).itemsize
        if str(path).lower().endswith(".gz"):
            ok = _gzip_isize(path) == expected % (1 << 32)
        else:
            ok = path.stat().st_size >= expected
        if not ok:  # maybe truncated; multi-member gzip files can also fail the cheap test: read to be sure
            try:
                _read_all(img)
            except Exception as e:
                raise DataPreparationError(
                    f"unreadable or corrupt NIfTI file {path} (truncated? header says {shape} {dtype}): "
                    f"{type(e).__name__}: {e}"
                ) from e
    return ImageInfo(shape=shape, spacing=zooms, dtype=dtype)


def _read_all(img) -> None:
    """Decompress and read all voxels (only for files that fail the cheap size check)."""
    np.asanyarray(img.dataobj)


def _png_info(path: Path, verify: bool) -> ImageInfo:
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            mode = im.mode
            bands = len(im.getbands())
            if verify:
                im.verify()
    except Exception as e:
        raise DataPreparationError(f"unreadable or corrupt PNG file {path}: {type(e).__name__}: {e}") from e
    shape = (h, w) if bands == 1 else (h, w, bands)
    dtype = {"I;16": "uint16", "I;16B": "uint16", "I": "int32", "F": "float32"}.get(mode, "uint8")
    return ImageInfo(shape=shape, spacing=None, dtype=dtype, mode=mode)


def read_array(path: str | os.PathLike) -> np.ndarray:
    """Voxel data (NIfTI with scaling applied; PNG as stored); ``DataPreparationError`` if unreadable."""
    path = Path(path)
    try:
        if path.name.lower().endswith(NIFTI_SUFFIXES):
            import nibabel as nib

            return np.asanyarray(nib.load(str(path)).dataobj)
        from PIL import Image

        with Image.open(path) as im:
            return np.array(im)
    except Exception as e:
        raise DataPreparationError(f"unreadable or corrupt file {path}: {type(e).__name__}: {e}") from e


def label_values(path: str | os.PathLike) -> np.ndarray:
    """Sorted distinct values of a label file; ``DataPreparationError`` if non-integer values are present."""
    arr = read_array(path)
    vals = np.unique(arr)
    if vals.dtype.kind == "f":
        if not np.all(np.isfinite(vals)) or not np.all(vals == np.round(vals)):
            bad = vals[~np.isfinite(vals) | (vals != np.round(vals))][:5]
            raise DataPreparationError(f"label file {path} has non-integer values, e.g. {bad.tolist()}")
        vals = vals.astype(np.int64)
    return vals
