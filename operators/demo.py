"""Operator demo: sparse-view and fan-beam FBP of a phantom; prints a table, writes a PNG.

python -m operators.demo --out out/
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import operators as ops


def _phantom(n: int) -> np.ndarray:
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    return resize(shepp_logan_phantom(), (n, n), anti_aliasing=True).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out"), help="folder for demo.png")
    parser.add_argument("--size", type=int, default=256, help="image size N (N × N)")
    args = parser.parse_args(argv)
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    n = args.size
    image = _phantom(n)
    x = torch.from_numpy(image)
    cases = {
        "parallel 180": ops.Operator(ops.volume((n, n)), ops.parallel(180, 2 * n)),
        "svct 8 views": ops.Operator(*ops.svct(8, n)),
        "lact 90°": ops.Operator(*ops.lact(90, 90, n)),
        "fan flat 360°": ops.Operator(ops.volume((n, n)), ops.fan_flat(240, 2 * n, 1.5, 2 * n, n)),
    }
    rows, recons = [], {}
    for name, A in cases.items():
        start = time.perf_counter()
        rec = ops.fbp(A, A(x)).clamp(0, 1).numpy()
        seconds = time.perf_counter() - start
        recons[name] = rec
        psnr = peak_signal_noise_ratio(image, rec, data_range=1.0)
        ssim = structural_similarity(image, rec, data_range=1.0)
        rows.append((name, A.range_shape, psnr, ssim, seconds))
    print(f"| {'geometry':<14} | {'sinogram':<11} | PSNR dB | SSIM  | seconds |")
    print(f"|{'-' * 16}|{'-' * 13}|---------|-------|---------|")
    for name, shape, psnr, ssim, seconds in rows:
        print(f"| {name:<14} | {str(shape):<11} | {psnr:7.2f} | {ssim:.3f} | {seconds:7.2f} |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(recons) + 1, figsize=(3 * (len(recons) + 1), 3.2))
    for ax, (title, img) in zip(axes, [("phantom", image), *recons.items()], strict=True):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "operators_demo.png"
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
