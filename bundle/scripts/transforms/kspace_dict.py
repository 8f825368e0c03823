"""Dictionary versions of the k-space undersampling (paper section 4.1), as MONAI's
``monai.apps.reconstruction.transforms.dictionary`` wraps its array transforms.

- :class:`KspaceUndersampled`: :class:`~scripts.transforms.kspace.KspaceUndersample` on one or more image keys
  (sharing one mask), the clean image kept as the target and the :class:`~scripts.transforms.kspace.KspaceRecord`
  fields (mask, k-space, degradation class / level / text) stored under their keys; optional per-sample fixed
  masks for evaluation (``seed_key`` / ``fixed_seed``).
- :class:`ModalityKspaceUndersampled`: Cartesian masks for MRI, radial for CT, chosen by the sample's modality.

Both are exported by :mod:`scripts.transforms` (and, as before, by :mod:`scripts.transforms.kspace`).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform

from scripts.prompts import MODALITIES, modality_index
from scripts.transforms.kspace import _MAX_SEED, KspaceUndersample, sample_seed, source_name

__all__ = ["KspaceUndersampled", "ModalityKspaceUndersampled"]


class KspaceUndersampled(RandomizableTransform, MapTransform):
    """Dictionary version of :class:`KspaceUndersample` (the transform the bundle configs declare).

    For each key in ``keys`` (default ``"image"``, all keys share one mask): the clean image is copied to
    ``target_key`` (float32, before degradation; ``None`` to skip), the key becomes the zero-filled magnitude, the
    mask goes to ``mask_key`` and the complex k-space to ``kspace_key`` (each ``None`` to skip). The record of the
    degradation goes to ``degradation_key`` (int class id from ``prompts.DEGRADATION_TYPES``),
    ``degradation_level_key`` (float: acceleration or spoke count), ``degradation_text_key`` (e.g.
    ``"Cartesian k-space undersampling, 8x acceleration, centre fraction 0.04"``).

    Fixed masks for evaluation (benchmark protocol, "one fixed mask per test slice"):

    - ``seed_key="seed"`` reads a per-sample integer, e.g. ``sample_seed(global_seed, dataset, slice_index)``,
      used as the seed as is (a non-integer value, e.g. a ``case_id`` string, is hashed with :func:`sample_seed`);
      the transform's own random state is left untouched;
    - ``fixed_seed=S`` with ``seed_key`` uses ``sample_seed(S, d[seed_key])`` (e.g. ``seed_key="case_id"``);
      without ``seed_key`` it uses ``sample_seed(S, basename(filename_or_obj))``.

    Either way the mask depends only on the sample, never on the order, the worker or the epoch.
    All other args go to :class:`KspaceUndersample`.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        target_key: str | Sequence[str] | None = "target",
        mask_key: str | None = "mask",
        kspace_key: str | None = None,
        degradation_key: str | None = "degradation",
        degradation_text_key: str | None = "degradation_text",
        degradation_level_key: str | None = "degradation_level",
        seed_key: str | None = None,
        fixed_seed: int | None = None,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ):
        MapTransform.__init__(self, keys, allow_missing_keys)
        prob = kwargs.pop("prob", 1.0)
        RandomizableTransform.__init__(self, prob)
        self.undersampler = KspaceUndersample(prob=1.0, **kwargs)
        if target_key is None:
            self.target_keys: list[str | None] = [None] * len(self.keys)
        else:
            self.target_keys = [target_key] if isinstance(target_key, str) else list(target_key)
            if len(self.target_keys) != len(self.keys):
                raise ValueError(f"target_key needs one name per key: keys={self.keys}, target_key={target_key}.")
        self.mask_key = mask_key
        self.kspace_key = kspace_key
        self.degradation_key = degradation_key
        self.degradation_text_key = degradation_text_key
        self.degradation_level_key = degradation_level_key
        self.seed_key = seed_key
        self.fixed_seed = fixed_seed
        self.undersampler.set_random_state(state=self.R)

    @property
    def degradation(self) -> int:
        return self.undersampler.degradation

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.undersampler.set_random_state(state=self.R)
        return self

    def randomize(self, data: Any = None) -> None:
        self._do_transform = True if self.prob >= 1.0 else bool(self.R.rand() < self.prob)

    def _sample_seed(self, d: Mapping, key: Hashable) -> int | None:
        if self.seed_key is None and self.fixed_seed is None:
            return None
        if self.seed_key is not None:
            if self.seed_key not in d:
                raise ValueError(f"{type(self).__name__}: seed_key {self.seed_key!r} is missing from the data dict.")
            value = d[self.seed_key]
            value = value.item() if hasattr(value, "item") else value
            if self.fixed_seed is not None:
                return sample_seed(self.fixed_seed, value)
            if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                return int(value) % _MAX_SEED
            return sample_seed(value)  # e.g. a case id string
        name = source_name(d[key], d.get(f"{key}_meta_dict"))
        if name is None:
            raise ValueError(
                f"{type(self).__name__}: fixed_seed needs a file name (filename_or_obj in the image metadata) "
                "or a seed_key with a per-sample integer."
            )
        return sample_seed(self.fixed_seed, os.path.basename(name))

    def __call__(self, data: Mapping[Hashable, Any], randomize: bool = True) -> dict[Hashable, Any]:
        d = dict(data)
        present = [(k, t) for k, t in zip(self.keys, self.target_keys) if k in d]
        if not present:
            if self.allow_missing_keys:
                return d
            raise KeyError(f"{type(self).__name__}: none of the keys {self.keys} is in the data dict.")
        if randomize:
            self.randomize()
        first_key = present[0][0]
        seed = self._sample_seed(d, first_key)
        if seed is None:  # all keys share the mask: draw once, then replay the same state for further keys
            state = self.R.get_state()
        for i, (key, tkey) in enumerate(present):
            img = d[key]
            name = source_name(img, d.get(f"{key}_meta_dict"))
            if i > 0 and seed is None:
                self.R.set_state(state)
            # validates img first; the prob decision is this transform's (drawn above), not the array transform's
            record = self.undersampler.undersample(img, randomize=False, seed=seed, name=name, apply=self._do_transform)
            if tkey is not None:
                d[tkey] = _clean(img)
            d[key] = record.image
        # every key shares the mask: the record fields are the same for each, stored once
        for out_key, value in (
            (self.mask_key, record.mask),
            (self.kspace_key, record.kspace),
            (self.degradation_key, record.degradation),
            (self.degradation_level_key, record.degradation_level),
            (self.degradation_text_key, record.degradation_text),
        ):
            if out_key is not None:
                d[out_key] = value
        return d


def _clean(img: Any) -> Any:
    """A float32 copy of a (validated) clean image, keeping its type and metadata."""
    if isinstance(img, torch.Tensor):
        out = img.detach().clone()
        return out.to(torch.float32)
    return np.array(img, dtype=np.float32, copy=True)


class ModalityKspaceUndersampled(RandomizableTransform, MapTransform):
    """Modality-dependent undersampling: Cartesian for MRI, radial (sparse-view) for CT (paper section 4.1).

    Reads ``d[modality_key]`` (a name such as ``"MRI"``/``"ct"`` or a class id of ``modalities``) and applies the
    :class:`KspaceUndersampled` built for that modality's mask type. ``mask_types`` maps modality names to
    ``"cartesian"``, ``"equispaced"`` or ``"radial"``; every other argument is shared by both (Cartesian-only
    arguments are ignored by the radial one and vice versa). ``set_random_state`` seeds both from ``self.R``.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        modality_key: str = "modality",
        mask_types: Mapping[str, str] | None = None,
        modalities: Sequence[str] = MODALITIES,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ):
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, 1.0)
        self.modality_key = modality_key
        self.modalities = tuple(modalities)
        mask_types = dict(mask_types or {"MRI": "cartesian", "CT": "radial"})
        self.by_modality: dict[int, KspaceUndersampled] = {}
        for mod, mtype in mask_types.items():
            self.by_modality[modality_index(mod, self.modalities)] = KspaceUndersampled(
                keys=keys, allow_missing_keys=allow_missing_keys, mask_type=mtype, **kwargs
            )
        self.set_random_state(state=self.R)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        for t in self.by_modality.values():
            t.set_random_state(state=self.R)
        return self

    def randomize(self, data: Any = None) -> None:
        pass

    def __call__(self, data: Mapping[Hashable, Any], randomize: bool = True) -> dict[Hashable, Any]:
        if self.modality_key not in data:
            raise ValueError(f"{type(self).__name__}: the data dict has no {self.modality_key!r} entry.")
        mod = data[self.modality_key]
        mod = mod.item() if hasattr(mod, "item") else mod
        idx = modality_index(mod, self.modalities)
        if idx not in self.by_modality:
            names = [self.modalities[i] for i in self.by_modality]
            raise ValueError(f"{type(self).__name__}: no mask type configured for modality {mod!r} (have {names}).")
        return self.by_modality[idx](data, randomize=randomize)
