"""Physics tests of the CLIP degradation primitives (noise, blur, motion in k-space, low resolution)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from scripts.prompts import DEGRADATION_PROMPTS, DEGRADATION_TYPES, degradation_index
from scripts.transforms import (
    PRIMITIVES,
    RandPrimitiveDegradation,
    RandPrimitiveDegradationd,
    fft2c,
    ifft2c,
    motion_kspace,
    truncate_kspace,
)


def blobs(h: int = 48, w: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    img = 0.2 + 0.7 * (((xx - w / 2) / (0.35 * w)) ** 2 + ((yy - h / 2) / (0.4 * h)) ** 2 <= 1)
    img[h // 3 : h // 3 + 5, w // 3 : w // 3 + 5] = 1.0
    return img[None].astype(np.float32)


def only(name: str, **kwargs) -> RandPrimitiveDegradation:
    return RandPrimitiveDegradation(degradations=[name], **kwargs).set_random_state(0)


def test_primitive_names_are_the_first_four_degradation_classes():
    assert PRIMITIVES == ("noise", "blur", "motion", "low_resolution") == tuple(DEGRADATION_TYPES[:4])
    with pytest.raises(ValueError, match="unknown primitive"):
        RandPrimitiveDegradation(degradations=["noise", "cartesian_undersampling"])


def test_motion_with_one_position_for_all_lines_is_a_circular_shift():
    x = torch.as_tensor(blobs(32, 40))
    shifts = np.tile([[3.0, -5.0]], (40, 1))  # every phase-encode line (columns) sees the same displacement
    y = ifft2c(motion_kspace(fft2c(x), shifts, phase_encode_axis=-1))
    assert y.imag.abs().max() < 1e-4
    np.testing.assert_allclose(y.real.numpy(), np.roll(x.numpy(), (3, -5), axis=(1, 2)), atol=1e-4)
    shifts_rows = np.tile([[-2.0, 4.0]], (32, 1))  # lines are rows
    y = ifft2c(motion_kspace(fft2c(x), shifts_rows, phase_encode_axis=-2))
    np.testing.assert_allclose(y.real.numpy(), np.roll(x.numpy(), (-2, 4), axis=(1, 2)), atol=1e-4)


def test_motion_along_the_phase_encode_axis_ghosts_only_along_that_axis():
    x = torch.zeros(1, 33, 33)
    x[0, 10, 16] = 1.0  # point source
    shifts = np.zeros((33, 2))
    shifts[20:, 1] = 4.0  # from line 20 on, the object moved 4 px along the phase-encode axis (columns)
    y = ifft2c(motion_kspace(fft2c(x), shifts, phase_encode_axis=-1)).abs()
    energy = (y**2).sum()
    assert abs(float(energy) - 1.0) < 1e-4  # phase-only corruption preserves energy
    assert float((y[0, 10] ** 2).sum()) > 0.9999 * float(energy), "ghosts stay on the point's row (PE axis)"
    assert float(y[0, 10, 16]) < 0.95, "part of the energy moved into ghosts"


def test_motion_transform_preserves_energy_and_changes_the_image():
    x = blobs()
    t = only("motion", motion_shift=(3.0, 6.0))
    for _ in range(3):
        y = t(x)
        assert t.degradation == degradation_index("motion")
        assert abs(float((y**2).sum()) / float((x**2).sum()) - 1) < 1e-4  # Parseval: |k| is untouched
        assert np.abs(y - x).max() > 0.05
        assert 0 < t.degradation_level <= 6.0
        assert t.motion_shifts.shape == (48, 2) and (t.motion_shifts[0] == 0).all()  # starts at rest


def test_low_resolution_is_k_space_truncation():
    n = 64
    i = np.arange(n)
    low = (1.5 + np.cos(2 * np.pi * 2 * i / n))[None, :, None] * np.ones((1, 1, n))
    high = (1.5 + 0.5 * np.cos(2 * np.pi * 20 * i / n))[None, :, None] * np.ones((1, 1, n))
    t = only("low_resolution", lowres_factor=4.0)  # keeps |k| <= 8 cycles
    np.testing.assert_allclose(t(low.astype(np.float32)), low, atol=1e-4)  # band-limited: untouched
    np.testing.assert_allclose(t(high.astype(np.float32)), 1.5, atol=1e-4)  # 20 cycles removed
    assert t.degradation == degradation_index("low_resolution") and t.degradation_level == 4.0
    k, kept = truncate_kspace(fft2c(torch.rand(1, 31, 40)), 3.0)
    assert kept == (10, 13)
    assert int((k[0].abs() > 0).sum()) == 130


def test_noise_std_and_mean():
    x = np.full((1, 64, 64), 0.5, np.float32)
    t = only("noise", noise_std=0.05)
    y = t(x)
    r = y - x
    assert abs(r.std() / 0.05 - 1) < 0.06 and abs(r.mean()) < 0.005
    assert t.degradation == 0 and t.degradation_level == 0.05


def test_blur_is_a_gaussian_of_the_requested_sigma():
    x = np.zeros((1, 33, 33), np.float32)
    x[0, 16, 16] = 1.0
    y = only("blur", blur_sigma=1.5)(x)[0]
    assert abs(y.sum() - 1) < 1e-3  # normalised kernel
    c = np.arange(33) - 16
    var_rows = (y.sum(axis=1) * c**2).sum()
    var_cols = (y.sum(axis=0) * c**2).sum()
    assert abs(var_rows - 2.25) < 0.1 and abs(var_cols - 2.25) < 0.1


def test_choice_among_configured_set_with_prompts_and_weights():
    t = RandPrimitiveDegradation(degradations=["noise", "blur"]).set_random_state(1)
    seen = set()
    for _ in range(30):
        t(blobs(32, 32))
        seen.add(t.degradation)
        assert t.degradation_text == DEGRADATION_PROMPTS[t.degradation]
        assert DEGRADATION_TYPES[t.degradation] == t.degradation_name
    assert seen == {0, 1}
    w = RandPrimitiveDegradation(degradations=["noise", "motion"], weights=[0, 1], text="description")
    for _ in range(5):
        w(blobs(32, 32))
        assert w.degradation_name == "motion" and w.degradation_text.startswith("Rigid motion")


def test_seeds_shapes_types_and_dict_version():
    a = RandPrimitiveDegradation().set_random_state(3)
    b = RandPrimitiveDegradation().set_random_state(3)
    x = blobs(32, 32)
    for _ in range(4):
        np.testing.assert_array_equal(a(x), b(x))
    vol = np.stack([blobs(32, 40)[0]] * 3, axis=-1)[None]
    for _ in range(4):
        y = RandPrimitiveDegradation(spatial_dims=3).set_random_state(_)(vol)
        assert y.shape == vol.shape and y.dtype == np.float32 and np.isfinite(y).all()
    batch = torch.rand(3, 2, 33, 20)
    t = RandPrimitiveDegradation().set_random_state(0)
    y = t(batch)
    assert y.shape == batch.shape and len(t.degradation) == 3
    meta = {"filename_or_obj": "/x/img7.png"}
    d = RandPrimitiveDegradationd().set_random_state(0)({"image": MetaTensor(torch.as_tensor(x), meta=meta)})
    assert isinstance(d["image"], MetaTensor) and d["image"].meta["filename_or_obj"] == "/x/img7.png"
    assert d["image"].dtype == torch.float32 and torch.equal(d["target"], torch.as_tensor(x))
    assert d["degradation_text"] == DEGRADATION_PROMPTS[d["degradation"]]
    for name in PRIMITIVES:  # constant images: finite, no NaN
        assert np.isfinite(only(name)(np.full((1, 16, 16), 2.0, np.float32))).all()
    with pytest.raises(ValueError, match="img7"):
        RandPrimitiveDegradationd()({"image": MetaTensor(torch.full((1, 8, 8), float("nan")), meta=meta)})
