"""Make the demo's real-CT excerpt: the central slices of the test volume at the cpu128 scale.

Usage::

    python benchmarks/make_demo_excerpt.py [--source ../shared/data/ct/cptac_pda_chest.h5]
        [--slices 48] [--out ctblend/data/excerpts/cptac_pda_chest_excerpt.h5]

Reads ``cptac_pda_chest.h5`` (the held-out TEST volume of ``../shared/data/ct``, never training
data; CC BY 3.0, attribution in ``ctblend/data/excerpts/LICENSE.md``), keeps the ``--slices``
central slices, takes the 2×2 in-plane block mean in HU (256² → 128², the ``cpu128`` scale), rounds
to int16 HU and writes the ``hu`` dataset with gzip level 9 (same layout and attributes as the
source, plus where the excerpt came from). The same input gives the same ``hu`` data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ctblend.data.scaling import HU_MAX, HU_MIN, SCALES, downsample_inplane
from ctblend.io import read_hdf5, write_hdf5

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "data" / "ct" / "cptac_pda_chest.h5"
OUT = REPO / "ctblend" / "data" / "excerpts" / "cptac_pda_chest_excerpt.h5"
KEPT_ATTRS = ("region", "source", "origin", "license", "z_order", "orientation", "scanner")


def make_excerpt(source: Path, n_slices: int, out: Path, size: int = SCALES["cpu128"]) -> Path:
    """Write the ``n_slices`` central slices of ``source`` at ``size``² as int16 HU to ``out``."""
    volume = read_hdf5(source)
    z, h, _ = volume.shape
    if not 1 <= n_slices <= z:
        raise SystemExit(f"--slices {n_slices}: expected 1 … {z} (the slices of {source})")
    start = (z - n_slices) // 2
    factor = h // size
    hu = downsample_inplane(volume.hu[start : start + n_slices].astype(np.float32), factor)
    hu = np.clip(np.rint(hu), HU_MIN, HU_MAX).astype(np.int16)
    dz, dy, dx = volume.spacing_mm
    attrs = {key: volume.meta[key] for key in KEPT_ATTRS if key in volume.meta}
    attrs.update(
        excerpt_of=f"{source.name} slices {start}:{start + n_slices} of {z} "
        f"(role: test; never training data)",
        conversion=f"{volume.meta.get('conversion', '')}; then slices {start}:{start + n_slices}, "
        f"{factor}x{factor} in-plane block mean in HU ({h}->{size}), np.rint, clip, int16 "
        "(benchmarks/make_demo_excerpt.py)",
        versions={},
    )
    return write_hdf5(
        out, hu, spacing_mm=(dz, dy * factor, dx * factor), attrs=attrs, compression_level=9
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--slices", type=int, default=48)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    path = make_excerpt(args.source, args.slices, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
