"""The demo phantoms: deterministic synthetic 3D volumes (MRI-like and CT-like) with segmentation labels.

:func:`generate_phantom` draws one case; ``scripts.data.demo`` writes a set of them to disk with a datalist.
Change what these functions draw and bump ``scripts.data.demo.GENERATOR_VERSION``, so that caches made by the
older generator are regenerated.

Both modalities share the meaning of the 4 label classes (a nested/adjacent organ model):

=====  ======================  =================================  ===============================
class  role                    MRI-like (cine bSSFP, short axis)  CT-like (chest, HU)
=====  ======================  =================================  ===============================
0      background              everything else                    everything else
1      adjacent structure      right-ventricle cavity             heart
2      enclosing organ         left-ventricle myocardium (ring)   lung parenchyma
3      inner region            left-ventricle cavity              lung lesion (inside a lung)
=====  ======================  =================================  ===============================

The MRI class order is the ACDC convention (1 RV, 2 myocardium, 3 LV), so a model trained on the demo speaks
the same class language as the real ACDC data.

MRI-like volumes are in arbitrary scanner units (non-negative int16): bright blood, dark myocardium, bright
epicardial fat, dark lungs, a smooth multiplicative bias field, smooth (low-frequency) tissue texture and
Rician noise. CT-like volumes are in Hounsfield units (int16): air -1000, fat -100, soft tissue ~40, lung
-850 with fine bright vessels, a contrast-enhanced heart ~130, bone +700 (ribs, vertebra), a lesion ~-300
with patchy texture, and correlated Gaussian noise. Shapes vary between cases (random sizes, positions,
orientations and smooth low-order boundary harmonics) and smoothly from slice to slice (half-ellipsoid
profiles along z, drifting centres); some structures are absent from some slices (apex, lesion extent).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["DEMO_LABELS", "DEMO_LABEL_DESCRIPTIONS", "DEMO_MODALITIES", "DEMO_SPACING", "generate_phantom"]

#: modality names, as in ``scripts.prompts.MODALITIES``
DEMO_MODALITIES: tuple[str, ...] = ("MRI", "CT")

DEMO_LABELS: dict[str, str] = {
    "0": "background",
    "1": "adjacent_structure",
    "2": "enclosing_organ",
    "3": "inner_region",
}

DEMO_LABEL_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "MRI": {"1": "right ventricle cavity", "2": "left ventricle myocardium", "3": "left ventricle cavity"},
    "CT": {"1": "heart", "2": "lung parenchyma", "3": "lung lesion"},
}

#: voxel spacing in mm (x, y, z): cardiac MRI with thick slices; chest CT with 5 mm slices
DEMO_SPACING: dict[str, tuple[float, float, float]] = {"MRI": (3.0, 3.0, 8.0), "CT": (5.0, 5.0, 5.0)}

_MODALITY_CODE = {"MRI": 0, "CT": 1}


# ----------------------------------------------------------------------------------------------- geometry
def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma: Sequence[float]) -> np.ndarray:
    """Gaussian-filtered white noise (periodic, via FFT) normalised to zero mean and unit std."""
    white = rng.standard_normal(tuple(shape))
    spec = np.fft.rfftn(white)
    gain = np.ones(spec.shape)
    for axis, (n, s) in enumerate(zip(shape, sigma)):
        f = np.fft.rfftfreq(n) if axis == len(shape) - 1 else np.fft.fftfreq(n)
        g = np.exp(-2.0 * (np.pi * s * f) ** 2)
        bshape = [1] * len(shape)
        bshape[axis] = len(f)
        gain = gain * g.reshape(bshape)
    out = np.fft.irfftn(spec * gain, s=tuple(shape))
    out -= out.mean()
    std = out.std()
    return out / std if std > 0 else out


def _star(xx, yy, cx, cy, a, b, theta, harmonics=()) -> np.ndarray:
    """Signed pseudo-distance (voxels, > 0 inside) to a rotated ellipse with a smooth radial perturbation.

    ``a``, ``b`` (semi-axes), ``cx``, ``cy`` may be per-slice arrays broadcastable to ``xx``; a semi-axis of 0
    means the structure is absent from that slice. ``harmonics`` is a list of (order k, amplitude, phase):
    the boundary radius is multiplied by ``1 + sum(amp * cos(k * phi + phase))``.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    present = (a > 0.05) & (b > 0.05)
    a_s = np.where(present, a, 1.0)
    b_s = np.where(present, b, 1.0)
    dx, dy = xx - cx, yy - cy
    c, s = np.cos(theta), np.sin(theta)
    u = (dx * c + dy * s) / a_s
    v = (-dx * s + dy * c) / b_s
    rn = np.sqrt(u * u + v * v)
    radius = np.ones_like(rn)
    if harmonics:
        phi = np.arctan2(v, u)
        for k, amp, ph in harmonics:
            radius = radius + amp * np.cos(k * phi + ph)
    d = (radius - rn) * np.sqrt(a_s * b_s)
    return np.where(present, d, -1e3)


def _soft(d: np.ndarray) -> np.ndarray:
    """Partial-volume occupancy from a signed distance: linear ramp over one voxel, 0.5 on the boundary."""
    return np.clip(d + 0.5, 0.0, 1.0)


def _layer(img: np.ndarray, mask: np.ndarray, value) -> np.ndarray:
    return img * (1.0 - mask) + value * mask


def _ellipsoid_profile(z: np.ndarray, length: float) -> np.ndarray:
    """Half-ellipsoid radius factor along z (1 at z=0, 0 beyond ``length``)."""
    return np.sqrt(np.clip(1.0 - (z / max(length, 1e-6)) ** 2, 0.0, None))


def _harm(rng: np.random.Generator, orders: Sequence[int], max_amp: float) -> list[tuple[int, float, float]]:
    return [(k, float(rng.uniform(0.0, max_amp)), float(rng.uniform(0.0, 2 * np.pi))) for k in orders]


def _centroids(mask: np.ndarray, xx: np.ndarray, yy: np.ndarray) -> list[list[float] | None]:
    out: list[list[float] | None] = []
    for k in range(mask.shape[2]):
        m = mask[:, :, k]
        n = m.sum()
        out.append(None if n == 0 else [float((xx[:, :, 0] * m).sum() / n), float((yy[:, :, 0] * m).sum() / n)])
    return out


# ----------------------------------------------------------------------------------------------- MRI
def _mri_phantom(rng: np.random.Generator, shape: tuple[int, int, int]):
    nx, ny, nz = shape
    xx, yy = np.meshgrid(np.arange(nx, dtype=float), np.arange(ny, dtype=float), indexing="ij")
    xx, yy = xx[:, :, None], yy[:, :, None]
    sx, sy = nx / 64.0, ny / 64.0  # geometry is designed on a 64x64 grid and scales with it
    zc = (np.arange(nz, dtype=float) + 0.5)[None, None, :]  # slice centres, base (z=0) to apex

    scale = float(rng.uniform(600.0, 1200.0))  # receiver gain: blood signal in scanner units
    # left ventricle: half-ellipsoids (epicardium, endocardium) with a drifting long axis
    cx0, cy0 = nx / 2 + rng.uniform(-4, 4) * sx, ny / 2 + rng.uniform(-4, 4) * sy
    drift = rng.uniform(-3, 3, size=2) * np.array([sx, sy])
    cx = cx0 + drift[0] * zc / nz
    cy = cy0 + drift[1] * zc / nz
    r_endo0 = rng.uniform(6.0, 9.0) * np.sqrt(sx * sy)
    wall = rng.uniform(2.6, 3.8) * np.sqrt(sx * sy)
    ell = rng.uniform(0.88, 1.14)
    theta = rng.uniform(0, np.pi)
    l_epi = rng.uniform(0.9, 1.1) * nz
    l_endo = l_epi - rng.uniform(0.9, 1.5)
    r_epi = (r_endo0 + wall) * _ellipsoid_profile(zc, l_epi)
    r_endo = r_endo0 * _ellipsoid_profile(zc, l_endo)
    d_epi = _star(xx, yy, cx, cy, r_epi * ell, r_epi / ell, theta, _harm(rng, (2, 3), 0.05))
    d_endo = _star(xx, yy, cx, cy, r_endo * ell, r_endo / ell, theta, _harm(rng, (2, 3), 0.06))
    d_endo = np.minimum(d_endo, d_epi - 1.0)  # at least one voxel of myocardium everywhere
    # right ventricle: a crescent wrapped around the septal side of the LV, shorter towards the apex
    alpha = np.pi + rng.uniform(-0.45, 0.45)
    l_rv = rng.uniform(0.55, 0.8) * l_epi
    e_rv = _ellipsoid_profile(zc, l_rv)
    rv_a = rng.uniform(5.0, 7.5) * np.sqrt(sx * sy) * e_rv
    rv_b = rng.uniform(11.0, 15.0) * np.sqrt(sx * sy) * e_rv
    rv_dist = r_epi + rng.uniform(0.1, 0.35) * rv_a
    rcx, rcy = cx + rv_dist * np.cos(alpha), cy + rv_dist * np.sin(alpha)
    d_rv_full = _star(xx, yy, rcx, rcy, rv_a, rv_b, alpha, _harm(rng, (2, 3), 0.06))
    d_rv = np.minimum(d_rv_full, -d_epi)  # the cavity ends at the septum
    d_rv_wall = np.minimum(d_rv_full + 1.0, -d_epi)

    # surroundings (background class): thorax, lungs, descending aorta, epicardial fat
    bcx, bcy = nx / 2 + rng.uniform(-2, 2) * sx, ny / 2 + rng.uniform(2, 5) * sy
    d_body = _star(xx, yy, bcx, bcy, 40 * sx, 31 * sy, rng.uniform(-0.1, 0.1), _harm(rng, (2,), 0.03))
    d_lungs = []
    for side in (-1, 1):
        lcx, lcy = bcx + side * rng.uniform(17, 21) * sx, bcy + rng.uniform(2, 6) * sy
        d_l = _star(xx, yy, lcx, lcy, rng.uniform(8, 11) * sx, rng.uniform(13, 17) * sy, 0.0, _harm(rng, (2,), 0.08))
        d_lungs.append(np.minimum(d_l, np.minimum(-(d_epi + 2.5), -(d_rv_full + 2.5))))
    ang_ao = alpha + np.pi + rng.uniform(-0.6, 0.6)
    ao_dist = (r_endo0 + wall) + rng.uniform(4.0, 6.0)
    d_ao = _star(xx, yy, cx0 + ao_dist * np.cos(ang_ao), cy0 + ao_dist * np.sin(ang_ao), 2.6, 2.6, 0.0)
    d_ao = np.minimum(d_ao, -(d_epi + 0.5))

    # intensity model (fractions of the blood signal), layered back to front with partial volume
    tex_tissue = _smooth_noise(rng, shape, (2.5, 2.5, 0.7))
    tex_myo = _smooth_noise(rng, shape, (1.5, 1.5, 0.5))
    tex_blood = _smooth_noise(rng, shape, (3.0, 3.0, 0.7))
    fat_patch = np.clip(_smooth_noise(rng, shape, (2.0, 2.0, 0.7)) - 0.3, 0.0, 1.0)
    nominal_frac = {"blood_lv": 1.0, "blood_rv": 0.93, "myo": 0.27}
    img = np.zeros(shape)
    img = _layer(img, _soft(d_body), 0.48 * (1 + 0.08 * tex_tissue))
    for d_l in d_lungs:
        img = _layer(img, _soft(d_l), 0.06)
    img = _layer(img, _soft(d_ao), 0.9)
    img = _layer(img, np.clip(_soft(d_epi + 1.5) - _soft(d_epi), 0, 1) * fat_patch, 0.8)
    img = _layer(img, np.clip(_soft(d_rv_wall) - _soft(d_rv), 0, 1), 0.3)
    img = _layer(img, _soft(d_epi), nominal_frac["myo"] * (1 + 0.05 * tex_myo))
    img = _layer(img, _soft(d_rv), nominal_frac["blood_rv"] * (1 + 0.04 * tex_blood))
    img = _layer(img, _soft(d_endo), nominal_frac["blood_lv"] * (1 + 0.04 * tex_blood))
    # smooth multiplicative bias field (coil sensitivity), within about +-20 %
    bias = _smooth_noise(rng, shape, (14.0 * sx, 14.0 * sy, 4.0))
    bias = np.exp(0.2 * bias / max(np.abs(bias).max(), 1e-6))
    signal = scale * img * bias
    sigma = float(rng.uniform(0.02, 0.035)) * scale  # Rician noise: magnitude of complex Gaussian noise
    noisy = np.hypot(signal + sigma * rng.standard_normal(shape), sigma * rng.standard_normal(shape))
    image = np.clip(np.rint(noisy), 0, 32767).astype(np.int16)

    label = np.zeros(shape, np.uint8)
    label[d_epi > 0] = 2
    label[d_endo > 0] = 3
    label[d_rv > 0] = 1
    info = {
        "modality": "MRI",
        "nominal": {
            "1": nominal_frac["blood_rv"] * scale,
            "2": nominal_frac["myo"] * scale,
            "3": nominal_frac["blood_lv"] * scale,
        },
        "noise_sigma": sigma,
        "centres": {
            "lv": [
                [float(a), float(b)]
                for a, b in zip(np.broadcast_to(cx, zc.shape).ravel(), np.broadcast_to(cy, zc.shape).ravel())
            ],
        },
        "rv_direction": [float(np.cos(alpha)), float(np.sin(alpha))],
    }
    return image, label, info, xx, yy


# ----------------------------------------------------------------------------------------------- CT
def _ct_phantom(rng: np.random.Generator, shape: tuple[int, int, int]):
    nx, ny, nz = shape
    xx, yy = np.meshgrid(np.arange(nx, dtype=float), np.arange(ny, dtype=float), indexing="ij")
    xx, yy = xx[:, :, None], yy[:, :, None]
    sx, sy = nx / 64.0, ny / 64.0
    kk = np.arange(nz, dtype=float)[None, None, :]
    t = kk / max(nz - 1, 1)  # 0 = cranial, 1 = caudal

    # body with a subcutaneous fat layer (anterior = small y)
    bcx = nx / 2 + rng.uniform(-2, 2) * sx + rng.uniform(-1, 1) * t
    bcy = ny / 2 + rng.uniform(-1, 2) * sy
    bax, bay = rng.uniform(26, 30) * sx, rng.uniform(18, 21.5) * sy
    d_body = _star(xx, yy, bcx, bcy, bax, bay, 0.0, _harm(rng, (2, 4), 0.025))
    fat = rng.uniform(1.5, 3.0)
    # heart: anterior mediastinum, left of midline, growing caudally
    hcx = bcx + rng.uniform(0, 4) * sx + rng.uniform(-1, 1) * t
    hcy = bcy - rng.uniform(4, 7) * sy + rng.uniform(-1, 1) * t
    grow_h = 0.55 + 0.5 * t
    h_a, h_b = rng.uniform(9, 12) * sx * grow_h, rng.uniform(7, 9) * sy * grow_h
    d_heart = _star(xx, yy, hcx, hcy, h_a, h_b, rng.uniform(-0.5, 0.5), _harm(rng, (2, 3), 0.06))
    # spine (vertebral body, canal) and descending aorta, posterior
    vcx, vcy = bcx, bcy + bay - rng.uniform(8.5, 10) * sy
    d_vert = _star(xx, yy, vcx, vcy, 3.8 * sx, 3.4 * sy, 0.0)
    d_arch = _star(xx, yy, vcx, vcy + 4.3 * sy, 2.6 * sx, 2.2 * sy, 0.0)
    d_canal = _star(xx, yy, vcx, vcy + 4.3 * sy, 1.4 * sx, 1.2 * sy, 0.0)
    d_ao = _star(xx, yy, vcx - 5.5 * sx, vcy - 3.0 * sy, 2.5, 2.5, 0.0)
    # lungs, inside the chest wall, carved around the mediastinum
    grow_l = 0.82 + 0.3 * t
    d_lungs = {}
    for side in (-1, 1):
        lcx = bcx + side * rng.uniform(11, 13) * sx
        lcy = bcy + rng.uniform(-1, 2) * sy
        d_l = _star(
            xx, yy, lcx, lcy, rng.uniform(8, 10) * sx * grow_l, rng.uniform(12, 15) * sy * grow_l,
            rng.uniform(-0.2, 0.2), _harm(rng, (2, 3), 0.06),
        )  # fmt: skip
        d_l = np.minimum(d_l, d_body - fat - 1.5)
        for d_other, gap in ((d_heart, 1.2), (d_vert, 1.5), (d_ao, 1.0), (d_arch, 1.0)):
            d_l = np.minimum(d_l, -(d_other + gap))
        d_lungs[side] = d_l
    # lesion: a lobulated 3D blob inside one lung (a ground-glass opacity of a few cm), spanning most slices: with
    # the version-1 size (3-6 px, 2-3 slices) it was on few training slices and no model learned it in a demo's budget
    side = int(rng.choice([-1, 1]))
    d_side = d_lungs[side]
    lz = int(rng.integers(2, nz - 2)) if nz >= 5 else int(rng.integers(0, nz))
    inside = np.argwhere(d_side[:, :, lz] > 3.0)
    if len(inside) == 0:
        inside = np.argwhere(d_side[:, :, lz] > 0.0)
    if len(inside) == 0:  # degenerate tiny grids: fall back to the lung centre
        inside = np.array([[int(bcx + side * 12 * sx), int(bcy)]])
    lx, ly = (float(v) for v in inside[int(rng.integers(len(inside)))])
    lr = rng.uniform(4.5, 7.5) * np.sqrt(sx * sy)
    lzr = rng.uniform(3.5, 6.0)
    e_les = _ellipsoid_profile(np.abs(kk - lz), lzr)
    le = rng.uniform(0.8, 1.25)
    d_les_full = _star(
        xx, yy, lx, ly, lr * le * e_les, lr / le * e_les, rng.uniform(0, np.pi), _harm(rng, (2, 3, 5), 0.12)
    )
    d_les = np.minimum(d_les_full, d_side)
    # ribs: small bony ellipses just inside the fat layer, appearing in some slices
    d_ribs = np.full(shape, -1e3)
    for phi in np.linspace(0, 2 * np.pi, 10, endpoint=False) + rng.uniform(0, 0.6):
        if np.sin(phi) > 0.75:  # no ribs over the spine
            continue
        vis = np.cos(2 * np.pi * (kk / rng.uniform(5, 8) + rng.uniform(0, 1))) > -0.1
        px, py = bcx + (bax - fat - 2.0) * np.cos(phi), bcy + (bay - fat - 2.0) * np.sin(phi)
        d_r = _star(xx, yy, px, py, 1.5, 1.0, phi + np.pi / 2)
        d_ribs = np.maximum(d_ribs, np.where(vis, d_r, -1e3))

    # intensities in HU, layered back to front with partial volume
    vessel = _smooth_noise(rng, shape, (0.8, 0.8, 0.6))
    vessel_m = np.clip((vessel - 1.6) / 0.4, 0.0, 1.0)
    tex_fine = _smooth_noise(rng, shape, (0.9, 0.9, 0.5))
    tex_les = _smooth_noise(rng, shape, (1.2, 1.2, 0.6))
    nominal = {"heart": 130.0, "lung": -850.0, "lesion": -300.0}
    img = np.full(shape, -1000.0)
    img = _layer(img, _soft(d_body), -100.0 + 10.0 * tex_fine)
    img = _layer(img, _soft(d_body - fat), 45.0 + 8.0 * tex_fine)
    img = _layer(img, _soft(d_ribs), 700.0)
    for d_l in d_lungs.values():
        img = _layer(img, _soft(d_l), nominal["lung"] + 650.0 * vessel_m + 8.0 * tex_fine)
    img = _layer(img, _soft(d_les), nominal["lesion"] + 70.0 * tex_les)
    img = _layer(img, _soft(d_heart), nominal["heart"] + 12.0 * tex_fine)
    img = _layer(img, _soft(d_ao), 150.0)
    img = _layer(img, _soft(d_arch), 700.0)
    img = _layer(img, _soft(d_canal), 20.0)
    img = _layer(img, _soft(d_vert), 700.0)
    img = _layer(img, _soft(d_vert - 1.0), 230.0 + 25.0 * tex_fine)
    sigma = float(rng.uniform(10.0, 20.0))  # CT noise: Gaussian with a short correlation length
    img = img + sigma * _smooth_noise(rng, shape, (0.6, 0.6, 0.0))
    image = np.clip(np.rint(img), -1024, 3071).astype(np.int16)

    label = np.zeros(shape, np.uint8)
    for d_l in d_lungs.values():
        label[d_l > 0] = 2
    label[d_les > 0] = 3
    label[d_heart > 0] = 1
    info = {
        "modality": "CT",
        "nominal": {"1": nominal["heart"], "2": nominal["lung"], "3": nominal["lesion"]},
        "noise_sigma": sigma,
        "centres": {
            "heart": [
                [float(a), float(b)]
                for a, b in zip(np.broadcast_to(hcx, kk.shape).ravel(), np.broadcast_to(hcy, kk.shape).ravel())
            ],
            "lesion": [lx, ly, float(lz)],
            "body": [float(np.mean(bcx)), float(bcy)],
        },
        "lesion_side": side,
    }
    return image, label, info, xx, yy


def generate_phantom(
    modality: str, seed: int = 0, index: int = 0, shape: Sequence[int] = (64, 64, 12)
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], dict[str, Any]]:
    """One synthetic case: ``(image int16, label uint8, spacing_mm, info)``, arrays shaped ``(x, y, z)``.

    The random stream depends only on ``(seed, modality, index)``, so a case does not change when the number
    of cases changes. ``info`` holds the generator's ground truth: ``nominal`` (class id -> nominal tissue
    intensity: scanner units for MRI, HU for CT) and ``centres`` (per-slice organ centres in voxels).
    """
    modality = modality.upper()
    if modality not in _MODALITY_CODE:
        raise ValueError(f"unknown demo modality {modality!r}; expected one of {list(_MODALITY_CODE)}")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape[:2]) < 16 or shape[2] < 1:
        raise ValueError(f"demo shape must be (x >= 16, y >= 16, z >= 1), got {shape}")
    rng = np.random.default_rng([int(seed), _MODALITY_CODE[modality], int(index)])
    fn = _mri_phantom if modality == "MRI" else _ct_phantom
    image, label, info, _, _ = fn(rng, shape)
    return image, label, DEMO_SPACING[modality], info
