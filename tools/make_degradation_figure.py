"""Make bundle/docs/images/degradations.png: each degradation of scripts.transforms on a synthetic phantom.

Row 1: the k-space operator (sampling mask, truncation box, motion phase error, blur transfer function or noise
spectrum), row 2: the degraded image (PSNR vs. the clean phantom), row 3: the absolute error.

    python tools/make_degradation_figure.py [--size 128] [--seed 0] [--out bundle/docs/images/degradations.png]
    python tools/make_degradation_figure.py --stats   # measured sampling fractions of the masks

Uses skimage's Shepp-Logan phantom (shipped with scikit-image), never real data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bundle"))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from skimage.data import shepp_logan_phantom  # noqa: E402
from skimage.transform import resize  # noqa: E402

from scripts.transforms import (  # noqa: E402
    CartesianKspaceMask,
    KspaceUndersample,
    RadialKspaceMask,
    RandPrimitiveDegradation,
    fft2c,
    motion_kspace,
    truncate_kspace,
)


def psnr(x: np.ndarray, y: np.ndarray) -> float:
    mse = float(np.mean((np.clip(y, 0, 1) - x) ** 2))
    return 10 * np.log10(1.0 / max(mse, 1e-12))


def sampling_stats(seed: int, draws: int = 2000) -> None:
    """Measured sampling fractions of the mask generators (the numbers quoted in bundle/docs/kspace.md)."""
    for pattern in ("random", "equispaced"):
        for n in (128, 199, 255, 256):
            for cf, acc in ((0.08, 4), (0.04, 8)):
                g = CartesianKspaceMask([cf], [acc], pattern).set_random_state(seed)
                f = np.array([g.draw((1, n))[0].mean() for _ in range(draws)])
                frac = f.mean()
                print(f"cartesian {pattern:10s} N={n} cf={cf} acc={acc}: fraction {frac:.4f} (x acc {frac * acc:.3f})")
    for n_sp in (30, 60, 90):
        for s in (128, 256):
            g = RadialKspaceMask([n_sp]).set_random_state(seed)
            f = np.mean([g.draw((s, s))[0].mean() for _ in range(100)])
            print(f"radial {n_sp} spokes {s}x{s}: fraction {f:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "bundle" / "docs" / "images" / "degradations.png"))
    p.add_argument("--stats", action="store_true", help="print measured mask sampling fractions instead")
    args = p.parse_args()
    if args.stats:
        sampling_stats(args.seed)
        return

    s = args.size
    x = resize(shepp_logan_phantom(), (s, s), anti_aliasing=True).astype(np.float32)
    x = (x - x.min()) / (x.max() - x.min())  # min-max per slice, as the benchmark protocol
    img = x[None]
    kx = fft2c(torch.as_tensor(img))[0]

    panels = []  # (title, operator image, operator caption, degraded)
    undersampling = [
        ("Cartesian random 4x", dict(mask_type="cartesian", accelerations=[4], center_fractions=[0.08])),
        ("Cartesian random 8x", dict(mask_type="cartesian", accelerations=[8], center_fractions=[0.04])),
        ("Equispaced 4x", dict(mask_type="equispaced", accelerations=[4], center_fractions=[0.08])),
        ("Radial 60 spokes", dict(mask_type="radial", num_spokes=[60])),
        ("Radial 30 golden-angle", dict(mask_type="radial", num_spokes=[30], spoke_ordering="golden")),
    ]
    for title, kw in undersampling:
        t = KspaceUndersample(**kw).set_random_state(args.seed)
        y = t(img)[0]
        mask = np.asarray(t.mask)[0]
        panels.append((title, mask, f"mask, {mask.mean():.1%} sampled", y, "gray"))

    for name, title in [
        ("noise", "Noise"),
        ("blur", "Blur"),
        ("motion", "Motion (k-space)"),
        ("low_resolution", "Low resolution"),
    ]:
        t = RandPrimitiveDegradation(degradations=[name], text="description").set_random_state(args.seed)
        y = t(img)[0]
        if name == "noise":
            op = np.log1p(np.abs(fft2c(torch.as_tensor(y - x)[None])[0].numpy()))
            cap, cmap = "noise spectrum (flat)", "magma"
        elif name == "blur":
            op = np.abs(fft2c(torch.as_tensor(y)[None])[0].numpy()) / (np.abs(kx.numpy()) + 1e-3)
            op = np.clip(op, 0, 1)
            cap, cmap = "transfer |F(y)|/|F(x)|", "magma"
        elif name == "motion":
            op = np.angle(motion_kspace(torch.ones(1, s, s, dtype=torch.complex64), t.motion_shifts)[0].numpy())
            cap, cmap = "phase error per PE line", "twilight"
        else:
            op = truncate_kspace(torch.ones(1, s, s, dtype=torch.complex64), t.degradation_level)[0].abs()[0].numpy()
            cap, cmap = f"kept k-space ({t.degradation_level:.1f}x)", "gray"
        panels.append((title, op, cap, y, cmap))

    n = len(panels) + 1
    fig, axes = plt.subplots(3, n, figsize=(1.55 * n, 5.2), dpi=100)
    axes[0, 0].imshow(np.log1p(np.abs(kx.numpy())), cmap="magma")
    axes[0, 0].set_title("clean phantom", fontsize=7)
    axes[0, 0].set_xlabel("log |k-space|", fontsize=6)
    axes[1, 0].imshow(x, cmap="gray", vmin=0, vmax=1)
    axes[1, 0].set_xlabel("clean image", fontsize=6)
    axes[2, 0].axis("off")
    for j, (title, op, cap, y, cmap) in enumerate(panels, start=1):
        axes[0, j].imshow(op, cmap=cmap)
        axes[0, j].set_title(title, fontsize=7)
        axes[0, j].set_xlabel(cap, fontsize=6)
        axes[1, j].imshow(y, cmap="gray", vmin=0, vmax=1)
        axes[1, j].set_xlabel(f"PSNR {psnr(x, y):.1f} dB", fontsize=6)
        axes[2, j].imshow(np.abs(y - x), cmap="inferno", vmin=0, vmax=0.3)
        axes[2, j].set_xlabel("|error| (0-0.3)", fontsize=6)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout(pad=0.3)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    from PIL import Image  # a 256-colour palette keeps the PNG small enough for the repository

    Image.open(out).convert("RGB").quantize(colors=256).save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")
    for title, _op, cap, y, _ in panels:
        print(f"{title:24s} {cap:34s} PSNR {psnr(x, y):5.2f} dB")


if __name__ == "__main__":
    main()
