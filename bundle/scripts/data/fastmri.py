"""fastMRI-style single-coil raw data (HDF5) for the inference workflow (``configs/inference_fastmri.json``).

A file holds ``kspace`` (slices, H, W) complex (H: read-out, oversampled 2x in fastMRI; W: phase encoding), and
optionally ``mask`` (W,) (dataset or attribute; fastMRI's test/challenge files), ``ismrmrd_header`` (XML: the
reconstruction matrix and field of view) and a target ``reconstruction_esc`` / ``reconstruction_rss``
(slices, h, w). Files are read with MONAI's ``FastMRIReader`` (it loads every dataset and attribute into a dict).

- :func:`read_fastmri`: the checked contents of one file (errors name the file and what is wrong).
- :func:`zero_filled` / :func:`center_crop`: ``|F^-1(M y)|`` (orthonormal centred FFT, ``scripts.transforms.kspace``)
  and the centred crop to the reconstruction matrix, as fastMRI does (``complex_center_crop`` then ``abs``: the
  crop of the magnitude is the same).
- :class:`LoadFastMRId`: one volume for the network: the zero-filled magnitude ``image`` (1, H, W, S) at the full
  k-space size (data consistency needs the image on the k-space grid), ``kspace`` (1, H, W, S) complex and ``mask``
  (1, H, W, S), all divided by one factor per volume (``scale``: the 99.5th percentile of the zero-filled
  magnitude), and the target (1, h, w, S) when the file has one, in the file's units.
- :class:`FastMRIOutputd`: crops the outputs to the reconstruction matrix, multiplies the restored image by
  ``scale`` (back to the file's units), sets the output geometry and writes ``<name>_fastmri.json`` (scale, sizes,
  mask).
- :class:`FastMRIScreen`: the inputs' check before the run (like ``scripts.workflows.io.InputScreen``).
"""

from __future__ import annotations

import json
import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from scripts.transforms.kspace import CartesianKspaceMask, ifft2c
from scripts.workflows.io import InputScreen

__all__ = [
    "TARGET_KEYS",
    "FastMRIError",
    "FastMRIOutputd",
    "FastMRIScreen",
    "LoadFastMRId",
    "center_crop",
    "fastmri_datalist",
    "read_fastmri",
    "volume_scale",
    "zero_filled",
]

logger = logging.getLogger(__name__)

#: target datasets, in order of preference (single-coil: ``reconstruction_esc``; multi-coil files have ``_rss``)
TARGET_KEYS = ("reconstruction_esc", "reconstruction_rss")
HDF5_SUFFIXES = (".h5", ".hdf5")


class FastMRIError(ValueError):
    """A file that is not usable single-coil fastMRI raw data (the message names the file)."""


def fastmri_datalist(input_dir: str | os.PathLike | None = None, files: Sequence[str] | None = None) -> list[dict]:
    """``[{"image": path}, ...]`` for the ``.h5`` files of ``input_dir`` (sorted) or the given ``files``."""
    if files:
        return [{"image": str(f)} for f in ([files] if isinstance(files, str) else files)]
    if not input_dir:
        raise ValueError("no fastMRI input: set --input_dir <folder of .h5 files> or --input_files.")
    root = Path(input_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"input folder {str(root)!r} does not exist.")
    found = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in HDF5_SUFFIXES)
    if not found:
        raise FileNotFoundError(f"input folder {str(root)!r} has no .h5 files.")
    return [{"image": str(p)} for p in found]


def _header_sizes(xml: Any) -> dict[str, Any]:
    """Reconstruction matrix (x, y) and pixel size (mm) from an ISMRMRD XML header (empty dict if unreadable)."""
    if isinstance(xml, np.ndarray):
        xml = xml.reshape(-1)[0] if xml.size else b""
    if isinstance(xml, bytes):
        xml = xml.decode("utf-8", errors="replace")
    try:
        root = ET.fromstring(str(xml))
    except ET.ParseError:
        return {}

    def find(*path: str) -> ET.Element | None:
        node: ET.Element | None = root
        for tag in path:
            node = next((c for c in node if c.tag.split("}")[-1] == tag), None) if node is not None else None
        return node

    out: dict[str, Any] = {}
    matrix, fov = find("encoding", "reconSpace", "matrixSize"), find("encoding", "reconSpace", "fieldOfView_mm")
    if matrix is None:
        return {}
    try:
        size = {c.tag.split("}")[-1]: int(float(c.text or 0)) for c in matrix}
        out["recon_size"] = (size["x"], size["y"])
        if fov is not None:
            mm = {c.tag.split("}")[-1]: float(c.text or 0) for c in fov}
            out["spacing"] = (mm["x"] / size["x"], mm["y"] / size["y"], mm.get("z", 1.0) / max(size.get("z", 1), 1))
    except (KeyError, ValueError, ZeroDivisionError):
        return {}
    return out


def read_fastmri(path: str | os.PathLike) -> dict[str, Any]:
    """The checked contents of a single-coil fastMRI HDF5 file.

    Returns ``kspace`` (S, H, W) complex64, ``mask`` (W,) bool or ``None``, ``recon_size`` (h, w) (``ismrmrd_header``
    reconstruction matrix, else the target's size, else (H, W); at most (H, W)), ``spacing`` (mm, or ``None``),
    ``target`` (S, h, w) float32 or ``None`` and ``target_key``.

    Raises:
        FastMRIError: not HDF5, no ``kspace`` dataset, ``kspace`` not complex or not (slices, H, W) (multi-coil),
            a mask of the wrong length, a target of the wrong number of slices; the message names the file.
    """
    from monai.apps.reconstruction.fastmri_reader import FastMRIReader

    path = str(path)
    try:
        dat = FastMRIReader().read(path)
    except Exception as e:  # h5py raises OSError for non-HDF5 or truncated files, KeyError/ValueError for others
        raise FastMRIError(f"{path}: cannot be read as HDF5 ({type(e).__name__}: {e})") from e
    if "kspace" not in dat:
        names = sorted(k for k in dat if k != "filename")
        raise FastMRIError(f"{path}: no 'kspace' dataset (found: {names}); expected fastMRI single-coil raw data.")
    kspace = np.asarray(dat["kspace"])
    if not np.iscomplexobj(kspace):
        raise FastMRIError(
            f"{path}: 'kspace' is {kspace.dtype}, not complex; expected complex64 k-space (slices, H, W)."
        )
    if kspace.ndim == 2:
        kspace = kspace[None]
    if kspace.ndim != 3:
        what = " (multi-coil: slices, coils, H, W)" if kspace.ndim == 4 else ""
        raise FastMRIError(
            f"{path}: 'kspace' has shape {kspace.shape}{what}; only single-coil k-space (slices, H, W) is supported."
        )
    s, h, w = kspace.shape
    mask = dat.get("mask")
    if mask is not None:
        mask = np.asarray(mask).reshape(-1).astype(bool)
        if mask.shape != (w,):
            raise FastMRIError(f"{path}: 'mask' has {mask.size} entries; expected one per k-space column ({w}).")
    target_key = next((k for k in TARGET_KEYS if k in dat), None)
    target = None if target_key is None else np.asarray(dat[target_key], dtype=np.float32)
    if target is not None and (target.ndim != 3 or target.shape[0] != s):
        raise FastMRIError(f"{path}: {target_key!r} has shape {target.shape}; expected ({s}, h, w) for {s} slices.")
    header = _header_sizes(dat["ismrmrd_header"]) if "ismrmrd_header" in dat else {}
    recon = header.get("recon_size") or (tuple(target.shape[1:]) if target is not None else (h, w))
    if target is not None and tuple(target.shape[1:]) != tuple(recon):
        logger.warning(f"{path}: {target_key} is {target.shape[1:]}, the header says {recon}; cropping to the target")
        recon = tuple(target.shape[1:])
    recon = (min(int(recon[0]), h), min(int(recon[1]), w))
    return {
        "kspace": kspace.astype(np.complex64),
        "mask": mask,
        "recon_size": recon,
        "spacing": header.get("spacing"),
        "target": target,
        "target_key": target_key,
        "acquisition": str(dat.get("acquisition", "")),
    }


def zero_filled(kspace: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
    """Complex zero-filled image ``F^-1(M y)`` of (..., H, W) k-space (orthonormal centred FFT)."""
    k = torch.as_tensor(kspace)
    if mask is not None:
        k = k * torch.as_tensor(mask).to(k.real.dtype)
    return ifft2c(k)


def center_crop(x: Any, size: Sequence[int], dims: tuple[int, int] = (-2, -1)) -> Any:
    """Centred crop of the two axes ``dims`` to ``size`` (fastMRI's ``center_crop``: start ``(n - s) // 2``)."""
    slices = [slice(None)] * x.ndim
    for d, s in zip(dims, size):
        n = x.shape[d]
        if s > n:
            raise ValueError(f"crop size {tuple(size)} is larger than the image {tuple(x.shape)} on axis {d}.")
        start = (n - s) // 2
        slices[d] = slice(start, start + s)
    return x[tuple(slices)]


def volume_scale(magnitude: torch.Tensor, percentile: float = 99.5) -> float:
    """The volume's normalisation factor: the ``percentile`` of the magnitude (1.0 for an all-zero volume)."""
    v = float(np.percentile(torch.as_tensor(magnitude).detach().cpu().float().numpy(), percentile))
    return v if v > 0 and np.isfinite(v) else 1.0


class LoadFastMRId(MapTransform):
    """Load the fastMRI file named by ``d[key]`` into the network's inputs (see the module docstring).

    Args:
        keys: the key holding the file path; it receives the zero-filled magnitude image (1, H, W, S).
        undersample: draw a Cartesian mask (``CartesianKspaceMask``, along the phase-encode axis W, one mask per
            volume, seeded by ``seed`` and the file name) for a file of fully sampled k-space; a file that already
            has a ``mask`` is refused.
        center_fractions, accelerations, mask_pattern: the mask's parameters (``"equispaced"`` or ``"random"``).
        percentile: the normalisation percentile of the zero-filled magnitude.

    Without ``undersample`` the mask is the file's ``mask``, else the k-space columns holding any non-zero sample
    (all columns: fully sampled). ``d`` receives ``kspace``, ``mask``, ``scale`` (float), ``fastmri`` (a JSON string
    of the facts written next to the outputs) and ``target`` when the file has one.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        undersample: bool = False,
        center_fractions: Sequence[float] = (0.08,),
        accelerations: Sequence[float] = (4.0,),
        mask_pattern: str = "equispaced",
        seed: int = 2024,
        percentile: float = 99.5,
        kspace_key: str = "kspace",
        mask_key: str = "mask",
        target_key: str = "target",
    ) -> None:
        super().__init__(keys)
        self.undersample = bool(undersample)
        self.masker = CartesianKspaceMask(center_fractions, accelerations, pattern=mask_pattern, phase_encode_axis=-1)
        self.seed = int(seed)
        self.percentile = float(percentile)
        self.kspace_key, self.mask_key, self.target_key = kspace_key, mask_key, target_key

    def _mask(self, path: str, data: dict) -> tuple[np.ndarray, str, dict]:
        kspace, mask = data["kspace"], data["mask"]
        h, w = kspace.shape[-2:]
        if self.undersample:
            if mask is not None:
                raise FastMRIError(
                    f"{path}: the file is already undersampled (it has a 'mask'); run without --undersample."
                )
            from scripts.transforms.kspace import sample_seed

            self.masker.set_random_state(seed=sample_seed(self.seed, os.path.basename(path)))
            drawn, params = self.masker.draw((h, w))
            return drawn[0], "drawn", params
        if mask is not None:
            return mask, "file", {}
        measured = np.abs(kspace).reshape(-1, w).max(axis=0) > 0
        return measured, "non-zero columns" if not measured.all() else "fully sampled", {}

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            path = str(d[key])
            f = read_fastmri(path)
            line, source, params = self._mask(path, f)
            kspace = torch.from_numpy(f["kspace"])  # (S, H, W)
            mask = torch.from_numpy(np.ascontiguousarray(line)).to(torch.float32).expand(kspace.shape)
            kspace = kspace * mask
            mag = zero_filled(kspace).abs()
            scale = volume_scale(mag, self.percentile)
            spacing = f["spacing"] or (1.0, 1.0, 1.0)
            affine = torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64))
            meta = {"filename_or_obj": path, "affine": affine, "original_affine": affine.clone()}
            d[key] = MetaTensor((mag / scale).permute(1, 2, 0)[None].float(), meta=meta)
            d[self.kspace_key] = (kspace / scale).permute(1, 2, 0)[None].to(torch.complex64).contiguous()
            d[self.mask_key] = mask.permute(1, 2, 0)[None].contiguous()
            d["scale"] = float(scale)
            if f["target"] is not None:
                d[self.target_key] = torch.from_numpy(f["target"]).permute(1, 2, 0)[None].contiguous()
            info = {
                "file": path,
                "scale": float(scale),
                "scale_definition": f"{self.percentile:g}th percentile of the zero-filled magnitude of the volume",
                "kspace_shape": list(f["kspace"].shape),
                "recon_size": list(f["recon_size"]),
                "spacing_mm": list(spacing),
                "mask": source,
                "measured_columns": int(line.sum()),
                "acceleration": round(float(line.size / max(int(line.sum()), 1)), 3),
                **({f"mask_{k}": float(v) for k, v in params.items()}),
                "target": f["target_key"],
            }
            d["fastmri"] = json.dumps(info)
        return d


class FastMRIOutputd(MapTransform):
    """Crop the outputs ``keys`` (C, H, W, S) to the reconstruction matrix, multiply ``restored_key`` by the volume's
    ``scale`` (the file's units), give them the input's geometry and write ``<output_dir>/<name>_fastmri.json``."""

    def __init__(
        self,
        keys: KeysCollection = ("pred", "restored"),
        restored_key: str = "restored",
        info_key: str = "fastmri",
        image_key: str = "image",
        output_dir: str | os.PathLike | None = None,
        allow_missing_keys: bool = True,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.restored_key, self.info_key, self.image_key = restored_key, info_key, image_key
        self.output_dir = output_dir

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        info = d[self.info_key]
        info = json.loads(info[0] if isinstance(info, (list, tuple)) else info)
        ref = d.get(self.image_key)
        meta = dict(ref.meta) if isinstance(ref, MetaTensor) else {"filename_or_obj": info["file"]}
        meta["spatial_shape"] = np.asarray([*info["recon_size"], int(info["kspace_shape"][0])])
        for key in self.key_iterator(d):
            x = d[key]
            x = x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)
            x = center_crop(x, info["recon_size"], dims=(-3, -2))
            if key == self.restored_key:
                x = x.float() * float(info["scale"])
            d[key] = MetaTensor(x.contiguous(), meta=dict(meta))
        if self.output_dir is not None:
            stem = os.path.basename(info["file"]).rsplit(".", 1)[0]
            os.makedirs(self.output_dir, exist_ok=True)
            with open(os.path.join(self.output_dir, f"{stem}_fastmri.json"), "w") as f:
                json.dump(info, f, indent=2)
            result = dict(d.get("result") or {})
            result["fastmri"] = info
            d["result"] = result
        return d


class FastMRIScreen(InputScreen):
    """:class:`scripts.workflows.io.InputScreen` for fastMRI files: each file is opened and its datasets checked
    (:func:`read_fastmri` without loading the k-space); :attr:`good` / :attr:`errors` / :meth:`raise_if_failed`."""

    def __init__(self, data: Sequence[Mapping[str, Any]], keys: KeysCollection = ("image",)) -> None:
        import h5py

        self.keys = (keys,) if isinstance(keys, str) else tuple(keys)
        self.good, self.errors, self.rejected = [], [], []
        for item in data:
            path = str(item.get(self.keys[0], ""))
            problem = None
            if not os.path.exists(path):
                problem = "file not found"
            else:
                try:
                    with h5py.File(path, "r") as f:
                        k = f.get("kspace")
                        if k is None or not isinstance(k, h5py.Dataset):
                            problem = f"no 'kspace' dataset (found: {sorted(f)})"
                        elif k.dtype.kind != "c":
                            problem = f"'kspace' is {k.dtype}, not complex"
                        elif len(k.shape) not in (2, 3):
                            problem = f"'kspace' has shape {k.shape}; only single-coil (slices, H, W) is supported"
                except OSError as e:
                    problem = f"cannot be read as HDF5 ({e})"
            if problem:
                logger.error(f"skipping input: {path}: {problem}")
                self.rejected.append((path, problem))
                self.errors.append(f"{path}: {problem}")
            else:
                self.good.append(dict(item))
