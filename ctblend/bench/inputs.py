"""What a benchmark runs on: volumes (files, MANIFEST roles, phantom), acquisitions, priors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ctblend.bench.config import BenchConfig
from ctblend.data.splits import ROLES, manifest_split
from ctblend.geometry_config import Acquisition, geometry_from_yaml
from ctblend.io.volume import volume_stem
from ctblend.pipeline import PRIOR_OF_METHOD
from ctblend.pipeline.volumes import VolumeInput, load_volume, phantom_input
from ctblend.pipeline.weights import SHIPPED_BASE, shipped_name, weights_dir
from ctblend.priors.base import precision_options
from ctblend.priors.loading import CheckpointError, load_prior, read_spec
from ctblend.protocol import get_protocol


@dataclass(frozen=True)
class VolumeSource:
    """A volume to benchmark: ``path`` (None for the phantom) and its table name."""

    name: str
    path: Path | None = None
    phantom_slices: int = 0


def resolve_volumes(specs: tuple[str, ...], ct_dir: str | None) -> list[VolumeSource]:
    """Volume specs → sources (roles expand to the files of ``ct_dir``'s MANIFEST)."""
    out: list[VolumeSource] = []
    split = None
    for spec in specs:
        match = re.fullmatch(r"phantom(?::(\d+))?", spec)
        if match:
            out.append(VolumeSource("phantom", None, int(match[1] or 32)))
            continue
        path = Path(spec)
        if path.exists():
            out.append(VolumeSource(volume_stem(path), path))
            continue
        if ct_dir is None:
            raise ValueError(
                f"volume {spec!r}: no such file or folder (for a MANIFEST role or volume name, "
                f"pass --ct-dir; roles: {', '.join(ROLES)})"
            )
        if spec in ROLES:
            split = split or manifest_split(ct_dir)
            if not split[spec]:
                raise ValueError(f"{ct_dir}: the MANIFEST lists no {spec!r} volume")
            out += [VolumeSource(p.stem, p) for p in split[spec]]
            continue
        candidate = Path(ct_dir) / f"{spec}.h5"
        if not candidate.is_file():
            raise ValueError(
                f"volume {spec!r}: not a file, folder, role ({', '.join(ROLES)}) or "
                f"<name>.h5 in {ct_dir}"
            )
        out.append(VolumeSource(spec, candidate))
    names = [v.name for v in out]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"volumes named more than once: {duplicates}")
    return out


def load_source(source: VolumeSource, config: BenchConfig) -> VolumeInput:
    """The ground truth ``(Z, S, S)`` in [0, 1] at the scale (the phantom of seed 0 for
    ``phantom``), cut to ``config.z_range``, and its spacing after the in-plane resizing."""
    if source.path is None:
        return phantom_input(source.phantom_slices, config.size, 0, config.z_range)
    return load_volume(source.path, config.size, config.z_range, None, config.spacing_mm)


def bench_acquisitions(config: BenchConfig) -> list[tuple[str, Acquisition]]:
    """(table name, acquisition) per protocol, or the one geometry of ``config.geometry``
    (named after its file; schema: :mod:`ctblend.geometry_config`)."""
    if config.geometry is not None:
        geometry, noise = geometry_from_yaml(config.geometry)
        name = Path(config.geometry).stem + ("+noise" if noise else "")
        return [(name, Acquisition(geometry=geometry, noise=noise))]
    return [(get_protocol(p).name, Acquisition(protocol=p)) for p in config.protocols]


class Priors:
    """Loads each prior once; a missing one is a skip reason, an explicit bad one an error."""

    def __init__(self, config: BenchConfig, device: torch.device):
        self.config, self.device = config, device
        self.cache: dict[tuple, Any] = {}
        self.options = precision_options(config.precision, device)
        explicit = {
            "blend++": config.prior_blendpp,
            "blend": config.prior_blend,
            "slice2d": config.prior_slice2d,
        }
        self.paths: dict[str, tuple[Path | None, bool]] = {}
        for kind, given in explicit.items():
            if given is not None:
                if not Path(given).exists():
                    raise ValueError(f"--prior for {kind!r}: {given} does not exist")
                self.paths[kind] = (Path(given), True)
            else:
                default = weights_dir() / shipped_name(kind, config.scale_name)
                self.paths[kind] = (default if default.exists() else None, False)
        if config.fbp_unet is not None and not Path(config.fbp_unet).is_dir():
            raise ValueError(f"--fbp-unet: {config.fbp_unet} is not a folder")

    def get(self, method: str, protocol_name: str) -> tuple[Any, str, str | None]:
        """(prior or None, prior label, skip reason or None) for ``method`` under a protocol."""
        if method == "fbp-unet":
            return self._fbp_unet(protocol_name)
        if method not in PRIOR_OF_METHOD:
            return None, "", None
        kind = PRIOR_OF_METHOD[method]
        path, explicit = self.paths[kind]
        if path is None:
            return None, "", self._missing(kind)
        key = ("diffusion", kind)
        if key not in self.cache:
            try:
                prior = load_prior(
                    path,
                    kind=kind,
                    image_size=self.config.size,
                    device=self.device,
                    **self.options,
                )
                steps = read_spec(path).steps
                label = f"{path.name} ({steps} steps, {self.options['precision']})"
                self.cache[key] = (prior, label, None)
            except CheckpointError as exc:
                if explicit:
                    raise
                self.cache[key] = (None, path.name, f"skipped: no prior ({exc})")
        return self.cache[key]

    def _missing(self, kind: str) -> str:
        """The skip reason when no ``kind`` prior fits: none shipped, or shipped for other sizes."""
        sizes = []
        for folder in sorted(weights_dir().glob(f"{SHIPPED_BASE[kind]}_*")):
            try:
                sizes.append(f"{folder.name} is {read_spec(folder).image_size}²")
            except CheckpointError:
                continue
        if not sizes:
            return f"skipped: no prior (no {kind!r} prior given or shipped)"
        return (
            f"skipped: no prior (no {kind!r} prior for {self.config.size}²: shipped "
            f"{', '.join(sizes)}; give one with --prior-{SHIPPED_BASE[kind]} or use that scale)"
        )

    def _fbp_unet(self, protocol_name: str) -> tuple[Any, str, str | None]:
        from ctblend.baselines.fbp_unet import FBPUNet, read_fbp_unet_spec

        key = ("fbp-unet", protocol_name)
        if key in self.cache:
            return self.cache[key]
        size = self.config.size
        if self.config.fbp_unet is not None:
            candidates = sorted(p for p in Path(self.config.fbp_unet).iterdir() if p.is_dir())
        else:
            default = weights_dir() / shipped_name(
                "fbp-unet", self.config.scale_name, protocol_name
            )
            candidates = [default] if default.is_dir() else []
        found = None
        for folder in candidates:
            try:
                _, spec = read_fbp_unet_spec(folder)
            except CheckpointError:
                continue
            if spec.protocol == protocol_name and spec.image_size == size:
                found = folder
                break
        if found is None:
            where = self.config.fbp_unet or weights_dir()
            reason = f"skipped: no prior (no FBP-UNet for {protocol_name} at {size}² in {where})"
            self.cache[key] = (None, "", reason)
        else:
            net = FBPUNet.load(found, image_size=size, device=self.device)
            self.cache[key] = (net, f"{found.name} ({net.spec.steps} steps)", None)
        return self.cache[key]
