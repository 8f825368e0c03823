"""Physics and contract tests of the k-space undersampling transforms (issue 4).

Images are 32-64 px so that the whole file runs in a few seconds on a busy CPU.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose
from monai.utils import set_determinism

from scripts.prompts import degradation_index
from scripts.transforms import (
    GOLDEN_ANGLE_DEG,
    CartesianKspaceMask,
    KspaceUndersample,
    KspaceUndersampled,
    ModalityKspaceUndersampled,
    ModalityToIndexd,
    RadialKspaceMask,
    fft2c,
    ifft2c,
    sample_seed,
)


def phantom(h: int = 48, w: int = 48, c: int = 1) -> np.ndarray:
    """Non-negative test image: two ellipses and a bright square (sharp edges = broadband k-space)."""
    yy, xx = np.mgrid[0:h, 0:w]
    yy = (yy - h / 2) / (h / 2)
    xx = (xx - w / 2) / (w / 2)
    img = 1.0 * ((xx / 0.8) ** 2 + (yy / 0.9) ** 2 <= 1)
    img -= 0.6 * (((xx - 0.2) / 0.3) ** 2 + ((yy + 0.1) / 0.5) ** 2 <= 1)
    img[h // 4 : h // 4 + 4, w // 2 : w // 2 + 3] = 1.0
    return np.repeat(img[None].astype(np.float32), c, axis=0)


def centred_fft_numpy(x: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


# ----------------------------------------------------------------------------------------------------- FFT / masks


def test_fft_is_the_orthonormal_centred_fft_of_the_protocol():
    x = torch.rand(2, 31, 40)
    k = fft2c(x)
    assert torch.allclose(k, torch.as_tensor(centred_fft_numpy(x.numpy()), dtype=torch.complex64), atol=1e-5)
    assert torch.allclose((k.abs() ** 2).sum(), (x**2).sum(), rtol=1e-5)  # Parseval (orthonormal)
    assert torch.allclose(ifft2c(k).real, x, atol=1e-5)
    dc = k[0, 31 // 2, 40 // 2]  # DC sits at N // 2
    assert abs(dc.real - x[0].sum() / math.sqrt(31 * 40)) < 1e-3


def protocol_reference_mask(n: int, cf: float, acc: float, seed: int) -> np.ndarray:
    """benchmark-protocol.md, written independently: band = round(n*cf) from (n - band + 1)//2, others with prob."""
    rng = np.random.RandomState(seed)
    band = round(n * cf)
    prob = (n / acc - band) / (n - band)
    mask = rng.uniform(size=n) < prob
    start = (n - band + 1) // 2
    mask[start : start + band] = True
    return mask


@pytest.mark.parametrize("n,cf,acc", [(128, 0.04, 8), (128, 0.08, 4), (199, 0.04, 8)])
def test_seeded_cartesian_mask_is_exactly_the_benchmark_protocol_mask(n, cf, acc):
    t = KspaceUndersampled(center_fractions=[cf], accelerations=[acc], seed_key="seed")
    for seed in (0, 7, 12345):
        d = t({"image": np.ones((1, 16, n), np.float32), "seed": seed})
        line = np.asarray(d["mask"])[0, 0] > 0
        np.testing.assert_array_equal(line, protocol_reference_mask(n, cf, acc, seed))


@pytest.mark.parametrize("pattern", ["random", "equispaced"])
@pytest.mark.parametrize("cf,acc", [(0.08, 4), (0.04, 8)])
def test_cartesian_sampling_fraction_and_centre_band(pattern, cf, acc):
    n = 64
    gen = CartesianKspaceMask([cf], [acc], pattern=pattern).set_random_state(0)
    band = round(n * cf)
    start = (n - band + 1) // 2
    fractions = []
    for _ in range(1000 if pattern == "random" else 50):
        mask, params = gen.draw((8, n))
        assert params == {"center_fraction": cf, "acceleration": acc}
        assert mask[:, start : start + band].all(), "centre band must always be sampled"
        assert mask[:, n // 2].all(), "DC line must be sampled"
        assert (mask == mask[:1]).all(), "Cartesian lines: constant along the read-out axis"
        fractions.append(mask.mean())
    assert abs(np.mean(fractions) * acc - 1) < 0.02, np.mean(fractions)


def test_cartesian_pair_is_drawn_from_the_list_and_recorded():
    t = KspaceUndersample(center_fractions=[0.08, 0.04], accelerations=[4, 8]).set_random_state(3)
    seen = set()
    for _ in range(30):
        t(phantom(32, 32))
        seen.add(t.degradation_level)
        cf = t.params["center_fraction"]
        assert {4.0: 0.08, 8.0: 0.04}[t.degradation_level] == cf
        assert t.degradation_text == (
            f"Cartesian k-space undersampling, {t.degradation_level:g}x acceleration, centre fraction {cf:g}"
        )
        assert t.degradation == degradation_index("cartesian_undersampling")
    assert seen == {4.0, 8.0}


def test_phase_encode_axis_rows():
    t = KspaceUndersample(accelerations=[4], center_fractions=[0.08], phase_encode_axis=-2).set_random_state(0)
    t(phantom(40, 32))
    m = np.asarray(t.mask)[0]
    assert (m == m[:, :1]).all(), "rows undersampled: each row fully sampled or not"
    assert 0.15 < m[:, 0].mean() < 0.4


def _spoke_pixels_present(mask: np.ndarray, theta: float) -> bool:
    """Walk the ideal line through the centre along its major axis; the nearest pixel must be sampled."""
    h, w = mask.shape
    cy, cx = h // 2, w // 2
    s, c = math.sin(theta), math.cos(theta)  # direction (ky, kx) = (s, c)
    if abs(c) >= abs(s):
        for kx in range(-cx, w - cx):
            ky = round(kx * s / c)
            if 0 <= cy + ky < h and not mask[cy + ky, cx + kx]:
                return False
    else:
        for ky in range(-cy, h - cy):
            kx = round(ky * c / s)
            if 0 <= cx + kx < w and not mask[cy + ky, cx + kx]:
                return False
    return True


def _ring_crossings(mask: np.ndarray, radius: float) -> int:
    """Number of separate arcs where the mask meets a ring (3x3-dilated, so a thin diagonal line cannot slip
    between two ring samples)."""
    h, w = mask.shape
    pad = np.pad(mask, 1)
    mask = np.max([pad[i : i + h, j : j + w] for i in range(3) for j in range(3)], axis=0)
    phi = np.linspace(0, 2 * np.pi, 4000, endpoint=False)
    on = mask[np.round(h // 2 + radius * np.sin(phi)).astype(int), np.round(w // 2 + radius * np.cos(phi)).astype(int)]
    return int((on & ~np.roll(on, 1)).sum())


@pytest.mark.parametrize("ordering", ["uniform", "golden"])
@pytest.mark.parametrize("shape", [(65, 65), (64, 64), (255, 199)])
def test_radial_mask_spokes_symmetry_and_count(ordering, shape):
    n = 8
    gen = RadialKspaceMask([n], ordering=ordering).set_random_state(1)
    mask, params = gen.draw(shape)
    assert params == {"num_spokes": n}
    h, w = shape
    # point symmetry through the centre (N//2): all samples whose mirror exists (row/col 0 unpaired if even)
    r0, c0 = (1 if h % 2 == 0 else 0), (1 if w % 2 == 0 else 0)
    sub = mask[r0:, c0:]
    np.testing.assert_array_equal(sub, sub[::-1, ::-1])
    assert mask[h // 2, w // 2]
    for theta in gen.last_angles:
        assert _spoke_pixels_present(mask, theta)
    # n distinct spokes: each full-diameter spoke crosses a ring twice
    assert _ring_crossings(mask, 0.4 * min(h, w)) == 2 * n


def test_radial_uniform_angles_and_golden_angles_never_repeat():
    uni = RadialKspaceMask([12], ordering="uniform", random_offset=False)
    np.testing.assert_allclose(np.diff(uni.angles(12)), math.pi / 12, atol=1e-12)
    gold = RadialKspaceMask([1], ordering="golden")
    assert abs(GOLDEN_ANGLE_DEG - 111.246) < 1e-3
    a = gold.angles(2000, offset=0.3)
    np.testing.assert_allclose(np.mod(np.diff(a), math.pi), math.radians(GOLDEN_ANGLE_DEG) % math.pi, atol=1e-9)
    gaps = np.diff(np.sort(a))
    assert gaps.min() > 1e-5, "golden-angle spokes must never repeat"
    # golden-angle masks with n spokes: n distinct rasterised spokes (no two coincide)
    gen = RadialKspaceMask([10], ordering="golden").set_random_state(2)
    mask, _ = gen.draw((97, 97))
    assert _ring_crossings(mask, 40) == 20


def test_mask_classes_are_callable_on_a_shape():
    m = CartesianKspaceMask([0.04], [8]).set_random_state(0)((20, 64))
    assert m.dtype == np.float32 and m.shape == (20, 64) and set(np.unique(m)) == {0.0, 1.0}
    r = RadialKspaceMask([12], ordering="golden").set_random_state(0)
    a, b = r((33, 33)), r((33, 33))
    assert r.params == {"num_spokes": 12} and not np.array_equal(a, b), "random rotation offset per mask"


def test_radial_sampling_fraction_and_width():
    gen1 = RadialKspaceMask([30], spoke_width=1).set_random_state(0)
    gen3 = RadialKspaceMask([30], spoke_width=3).set_random_state(0)
    m1, _ = gen1.draw((128, 128))
    m3, _ = gen3.draw((128, 128))
    # 30 one-sample lines of ~128-181 samples minus the overlap near the centre
    assert 0.15 < m1.mean() < 0.30, m1.mean()
    assert 2.0 < m3.sum() / m1.sum() < 3.2
    more = RadialKspaceMask([90]).set_random_state(0).draw((128, 128))[0]
    assert more.mean() > m1.mean() * 1.8


# ----------------------------------------------------------------------------------------------------- physics


@pytest.mark.parametrize(
    "mask_type,kwargs",
    [("cartesian", {"accelerations": [1], "center_fractions": [0.08]}), ("radial", {"spoke_width": 1e4})],
)
def test_full_mask_returns_the_input(mask_type, kwargs):
    x = phantom(33, 40, c=2) + 0.1
    t = KspaceUndersample(mask_type=mask_type, **kwargs)
    y = t(x)
    assert np.asarray(t.mask).min() == 1
    np.testing.assert_allclose(y, x, atol=1e-5)


@pytest.mark.parametrize("mask_type", ["cartesian", "equispaced", "radial"])
def test_data_consistency(mask_type):
    x = torch.as_tensor(phantom(48, 40))
    t = KspaceUndersample(mask_type=mask_type, num_spokes=[20]).set_random_state(0)
    y = t(x)
    m = torch.as_tensor(t.mask)[0] > 0
    kx = fft2c(x)[0]
    ky = t.kspace[0]
    assert 0.05 < m.float().mean() < 0.6
    assert torch.allclose(ky[m], kx[m], atol=1e-5), "measured samples must equal F(x) on the mask"
    assert torch.count_nonzero(ky[~m]) == 0, "zero-filled outside the mask"
    y_complex = ifft2c(ky[None])
    assert torch.allclose(fft2c(y_complex)[0][m], kx[m], atol=1e-5), "F(y) == F(x) on the sampled locations"
    assert torch.allclose(y, y_complex.abs(), atol=1e-6), "the input is the magnitude of the zero-filled image"
    assert not torch.allclose(y, x, atol=1e-2), "undersampling must change the image"


def test_point_symmetric_radial_mask_gives_a_real_zero_filled_image():
    x = torch.as_tensor(phantom(63, 63))
    t = KspaceUndersample(mask_type="radial", num_spokes=[15]).set_random_state(4)
    t(x)
    y_complex = ifft2c(t.kspace)
    assert y_complex.imag.abs().max() < 1e-5 * y_complex.real.abs().max() + 1e-6  # Hermitian symmetry


def test_complex_kspace_noise_has_the_requested_std():
    x = torch.zeros(1, 64, 64)
    t = KspaceUndersample(accelerations=[1], center_fractions=[0.08], noise_std=0.05).set_random_state(0)
    y = t(x)
    k = t.kspace[0]
    assert abs(float(k.real.std()) / 0.05 - 1) < 0.06 and abs(float(k.imag.std()) / 0.05 - 1) < 0.06
    assert abs(float(y.mean()) / (0.05 * math.sqrt(math.pi / 2)) - 1) < 0.06  # Rayleigh magnitude
    assert "noise sigma 0.05" in t.degradation_text
    t2 = KspaceUndersample(accelerations=[4], center_fractions=[0.08], noise_std=(0.01, 0.02)).set_random_state(0)
    t2(x)
    m = torch.as_tensor(t2.mask)[0] > 0
    assert torch.count_nonzero(t2.kspace[0][~m]) == 0, "noise only where k-space was measured"


# ----------------------------------------------------------------------------------------------------- shapes/types


def test_metatensor_numpy_torch_and_dtypes():
    meta = {"filename_or_obj": "/data/case1.nii.gz", "affine": torch.diag(torch.tensor([2.0, 2.0, 1.0, 1.0]))}
    x = MetaTensor(torch.as_tensor(phantom(32, 32)).double(), meta=meta)
    d = KspaceUndersampled(kspace_key="kspace")({"image": x})
    for key in ("image", "target", "mask"):
        assert isinstance(d[key], MetaTensor) and d[key].dtype == torch.float32
        assert d[key].meta["filename_or_obj"] == "/data/case1.nii.gz"
        assert torch.equal(d[key].affine, x.affine)
    assert d["kspace"].dtype == torch.complex64 and d["kspace"].shape == (1, 32, 32)
    assert torch.allclose(d["target"], x.float())
    y = KspaceUndersample()(phantom(32, 32).astype(np.float64))
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    y = KspaceUndersample()((phantom(32, 32) * 255).astype(np.uint8))
    assert y.dtype == np.float32


@pytest.mark.parametrize("mask_type", ["cartesian", "radial"])
def test_odd_non_square_and_batch_first(mask_type):
    x = torch.rand(2, 1, 255, 199)
    t = KspaceUndersample(mask_type=mask_type, num_spokes=[30, 60]).set_random_state(0)
    y = t(x)
    assert y.shape == x.shape and y.dtype == torch.float32 and torch.isfinite(y).all()
    assert t.mask.shape == (2, 1, 255, 199)
    assert len(t.degradation_level) == 2 and len(t.degradation_text) == 2
    assert not torch.equal(t.mask[0], t.mask[1]), "batch items get independent masks"
    for b in range(2):  # per item: channels share the item's mask, data consistency per item
        kx = fft2c(x[b])
        m = t.mask[b, 0] > 0
        assert torch.allclose(t.kspace[b][:, m], kx[:, m], atol=1e-4)


@pytest.mark.parametrize("mask_per", ["slice", "volume"])
@pytest.mark.parametrize("slice_axis", [-1, 0])
def test_3d_volume_slice_wise(mask_per, slice_axis):
    vol = np.stack([phantom(32, 40)[0] * (1 + 0.1 * i) for i in range(5)], axis=-1)[None]  # (1, 32, 40, 5)
    if slice_axis == 0:
        vol = np.ascontiguousarray(np.moveaxis(vol, -1, 1))  # (1, 5, 32, 40), slices along axis 0
    t = KspaceUndersample(spatial_dims=3, slice_axis=slice_axis, mask_per=mask_per, accelerations=[4, 8])
    t.set_random_state(0)
    y = t(vol)
    assert y.shape == vol.shape and y.dtype == np.float32
    masks = np.moveaxis(t.mask[0], 2 if slice_axis == -1 else 0, 0)  # (5, P0, P1)
    xs = np.moveaxis(vol[0], 2 if slice_axis == -1 else 0, 0)
    ys = np.moveaxis(y[0], 2 if slice_axis == -1 else 0, 0)
    same = [np.array_equal(masks[0], masks[i]) for i in range(1, 5)]
    assert all(same) if mask_per == "volume" else not any(same)
    fracs = {round(float(m[0].mean() if True else 0), 3) for m in masks}
    assert len(fracs) >= 1
    for i in range(5):  # each slice is exactly the 2-D degradation of that slice with its mask
        ref = ifft2c(fft2c(torch.as_tensor(xs[i])) * torch.as_tensor(masks[i])).abs().numpy()
        np.testing.assert_allclose(ys[i], ref, atol=1e-5)
    assert isinstance(t.degradation_level, float), "one acceleration per volume"


def test_constant_and_zero_images_stay_finite():
    for value in (0.0, 3.0):
        for mask_type in ("cartesian", "equispaced", "radial"):
            t = KspaceUndersample(mask_type=mask_type, noise_std=0.0)
            y = t(np.full((1, 32, 33), value, np.float32))
            assert np.isfinite(y).all() and y.dtype == np.float32
            # a constant image has only a DC component, which every mask samples: output == input
            np.testing.assert_allclose(y, value, atol=1e-4)


def test_bad_input_gives_clear_errors():
    meta = {"filename_or_obj": "/data/bad_case.nii.gz"}
    t = KspaceUndersample()
    with pytest.raises(ValueError, match=r"channel-first.*bad_case"):
        t(MetaTensor(torch.rand(32, 32), meta=meta))
    with pytest.raises(ValueError, match="channel-first"):
        t(np.random.rand(1, 2, 3, 32, 32))
    with pytest.raises(ValueError, match="complex"):
        t(torch.rand(1, 16, 16, dtype=torch.complex64))
    nan = torch.rand(1, 16, 16)
    nan[0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match=r"NaN.*bad_case"):
        KspaceUndersampled()({"image": MetaTensor(nan, meta=meta)})
    with pytest.raises(ValueError, match="NaN"):
        t(np.full((1, 8, 8), np.inf))
    with pytest.raises(ValueError, match="mask_type"):
        KspaceUndersample(mask_type="spiral")
    with pytest.raises(ValueError, match="same length"):
        KspaceUndersample(center_fractions=[0.08], accelerations=[4, 8])


# ----------------------------------------------------------------------------------------------------- seeds


def _masks(t, n=4, shape=(1, 32, 32)):
    out = []
    for _ in range(n):
        t(np.ones(shape, np.float32))
        out.append(np.asarray(t.mask).copy())
    return out


def test_same_seed_same_masks_different_seed_different_masks():
    for kw in ({"mask_type": "cartesian"}, {"mask_type": "equispaced"}, {"mask_type": "radial", "num_spokes": [8]}):
        a = _masks(KspaceUndersample(**kw).set_random_state(11))
        b = _masks(KspaceUndersample(**kw).set_random_state(11))
        c = _masks(KspaceUndersample(**kw).set_random_state(12))
        assert all(np.array_equal(p, q) for p, q in zip(a, b))
        assert not all(np.array_equal(p, q) for p, q in zip(a, c))
    da = KspaceUndersampled(mask_type="radial", num_spokes=[8]).set_random_state(5)
    db = KspaceUndersampled(mask_type="radial", num_spokes=[8]).set_random_state(5)
    dc = KspaceUndersampled(mask_type="radial", num_spokes=[8]).set_random_state(6)
    img = {"image": np.ones((1, 32, 32), np.float32)}
    ma, mb, mc = (np.asarray(t(img)["mask"]) for t in (da, db, dc))
    assert np.array_equal(ma, mb) and not np.array_equal(ma, mc)


def test_fixed_per_sample_masks_for_evaluation():
    img = np.ones((1, 32, 32), np.float32)
    t = KspaceUndersampled(seed_key="seed").set_random_state(0)
    first = np.asarray(t({"image": img, "seed": sample_seed(0, "acdc", 3)})["mask"])
    with pytest.raises(ValueError, match="seed_key"):
        t({"image": img})  # an evaluation transform never silently falls back to a random mask
    # array version: a seeded call neither depends on nor disturbs the transform's own random stream
    arr, ref = KspaceUndersample().set_random_state(0), KspaceUndersample().set_random_state(0)
    arr(img, seed=99)
    m_seeded = np.asarray(arr.mask).copy()
    arr(img)
    ref(img)
    assert np.array_equal(np.asarray(arr.mask), np.asarray(ref.mask))
    arr(img)
    arr(img, seed=99)
    assert np.array_equal(np.asarray(arr.mask), m_seeded)
    again = np.asarray(t({"image": img, "seed": sample_seed(0, "acdc", 3)})["mask"])
    other = np.asarray(t({"image": img, "seed": sample_seed(0, "acdc", 4)})["mask"])
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert sample_seed(0, "acdc", 3) == sample_seed(0, "acdc", 3) != sample_seed(0, "covid", 3)
    # datalist items carry a case_id: fixed_seed + seed_key="case_id" gives one mask per case
    c = KspaceUndersampled(seed_key="case_id", fixed_seed=0)
    ma = np.asarray(c({"image": img, "case_id": "patient013_frame01_slice05"})["mask"])
    mb = np.asarray(c({"image": img, "case_id": "patient013_frame01_slice06"})["mask"])
    assert np.array_equal(ma, np.asarray(c({"image": img, "case_id": "patient013_frame01_slice05"})["mask"]))
    assert not np.array_equal(ma, mb)
    # fixed_seed + file name: the mask depends on the base name only
    f = KspaceUndersampled(mask_type="radial", num_spokes=[8], fixed_seed=123)
    mk = lambda name: {"image": MetaTensor(torch.ones(1, 32, 32), meta={"filename_or_obj": name})}  # noqa: E731
    m1 = np.asarray(f(mk("/a/p013_s1.png"))["mask"])
    m2 = np.asarray(f(mk("/other/dir/p013_s1.png"))["mask"])
    m3 = np.asarray(f(mk("/a/p013_s2.png"))["mask"])
    assert np.array_equal(m1, m2) and not np.array_equal(m1, m3)
    with pytest.raises(ValueError, match="file name"):
        f({"image": np.ones((1, 8, 8), np.float32)})


def _loader_masks(seed: int, workers: int):
    set_determinism(seed=seed)
    data = [{"image": np.ones((1, 32, 32), np.float32), "modality": m} for m in ("MRI", "CT") * 3]
    tf = Compose([ModalityToIndexd(), ModalityKspaceUndersampled(num_spokes=[20, 30])])
    loader = DataLoader(Dataset(data, tf), batch_size=2, num_workers=workers)
    out = [(np.asarray(b["mask"]), b["degradation"].tolist(), b["degradation_level"].tolist()) for b in loader]
    set_determinism(seed=None)
    return out


def test_determinism_through_set_determinism_and_dataloader_workers():
    a = _loader_masks(0, workers=2)
    b = _loader_masks(0, workers=2)
    c = _loader_masks(1, workers=2)
    assert len(a) == 3
    for (ma, da, la), (mb, db, lb) in zip(a, b):
        assert np.array_equal(ma, mb) and da == db == [4, 5] and la == lb
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(a, c))


def test_modality_dependent_undersampling():
    t = ModalityKspaceUndersampled(accelerations=[8], center_fractions=[0.04], num_spokes=[60]).set_random_state(0)
    img = phantom(32, 32)
    mri = t({"image": img, "modality": "MRI"})
    ct = t({"image": img, "modality": 1})
    assert mri["degradation"] == degradation_index("cartesian_undersampling") and mri["degradation_level"] == 8
    assert ct["degradation"] == degradation_index("radial_undersampling") and ct["degradation_level"] == 60
    assert ct["degradation_text"].startswith("Radial k-space undersampling, 60 spokes")
    np.testing.assert_array_equal(mri["target"], img)
    with pytest.raises(ValueError, match="modality"):
        t({"image": img})
    with pytest.raises(ValueError, match="unknown modality"):
        t({"image": img, "modality": "PET"})


def test_prob_zero_passes_the_image_through():
    x = phantom(32, 32)
    d = KspaceUndersampled(prob=0.0)({"image": x})
    np.testing.assert_allclose(d["image"], x, atol=1e-5)
    assert np.asarray(d["mask"]).min() == 1 and d["degradation_level"] == 0.0
    assert d["degradation_text"] == "no degradation"


def test_equispaced_mask_rejects_a_centre_band_that_leaves_no_outer_lines():
    masker = CartesianKspaceMask(center_fractions=[0.25], accelerations=[4], pattern="equispaced")
    with pytest.raises(ValueError, match="no outer lines"):
        masker((100, 100))
    assert masker((100, 90)).shape == (100, 90)  # phase encoding runs along the last axis: 22 * 4 != 90 lines


def test_undersample_returns_the_record_the_dict_transform_stores():
    """The array transform's documented record is what the dictionary transform puts in the dict (no private state);
    the old import paths of the split modules still work."""
    import scripts.transforms.kspace as kspace_module
    from scripts.transforms import KspaceRecord
    from scripts.transforms.kspace_dict import KspaceUndersampled as DictFromItsModule

    assert kspace_module.KspaceUndersampled is KspaceUndersampled is DictFromItsModule
    assert kspace_module.ModalityKspaceUndersampled is ModalityKspaceUndersampled
    assert (
        kspace_module.CartesianKspaceMask is CartesianKspaceMask and kspace_module.GOLDEN_ANGLE_DEG == GOLDEN_ANGLE_DEG
    )
    img = np.random.default_rng(0).random((1, 32, 32)).astype(np.float32)
    array = KspaceUndersample(accelerations=(8.0,), center_fractions=(0.04,))
    record = array.undersample(img, seed=7)
    assert isinstance(record, KspaceRecord) and record.degradation == degradation_index("cartesian_undersampling")
    assert record.degradation_level == 8.0 and record.params == {"center_fraction": 0.04, "acceleration": 8.0}
    np.testing.assert_array_equal(array(img, seed=7), record.image)  # __call__ is the record's image
    assert np.array_equal(array.mask, record.mask) and array.degradation_text == record.degradation_text
    skipped = array.undersample(img, seed=7, apply=False)  # pass through without drawing `prob`
    assert skipped.degradation_level == 0.0 and skipped.params is None and np.all(skipped.mask == 1)
    np.testing.assert_allclose(skipped.image, img, atol=1e-6)  # through the FFT and back
    d = KspaceUndersampled(kspace_key="kspace", seed_key="seed", accelerations=(8.0,), center_fractions=(0.04,))(
        {"image": img, "seed": 7}
    )
    np.testing.assert_array_equal(d["image"], record.image)
    np.testing.assert_array_equal(d["mask"], record.mask)
    np.testing.assert_array_equal(d["kspace"], record.kspace)
    assert (d["degradation"], d["degradation_level"], d["degradation_text"]) == (
        record.degradation,
        record.degradation_level,
        record.degradation_text,
    )
