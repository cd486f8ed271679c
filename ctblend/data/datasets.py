"""Training datasets over HDF5 CT volumes (``hu`` dataset, one chunk per slice), read lazily.

Every item is float32 in [0, 1] at the requested in-plane scale (``"cpu128"``, ``"paper256"`` or
an int size): HU → ``scaling.hu_to_unit`` → ``scaling.to_scale``.
Files are opened on first use in each process (so DataLoader workers open their own handles) and
only the needed slices are read, so memory does not grow with the data set. Randomness (gap,
position, flips) comes from ``numpy.random.default_rng([seed, epoch, index])``: an item depends on
(seed, epoch, index) only, never on the worker that reads it. ``z_range`` (fractions of each
volume's depth) restricts every item to a slab, e.g. (0, 0.9) to train and (0.9, 1) to validate:
no item of one touches a slice of the other.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from ctblend.data.scaling import hu_to_unit, scale_size, to_scale
from ctblend.io import DataError, open_hdf5_volume

__all__ = ["FBPPairDataset", "SampleInfo", "SliceDataset", "SliceGroupDataset", "WindowDataset"]


@dataclass(frozen=True)
class SampleInfo:
    """Where an item comes from: file, slice indices (in channel order), label and flip."""

    file: Path
    slices: tuple[int, ...]
    label: int
    flip: bool


class _VolumeReader:
    """Lazy per-process access to the ``hu`` datasets of ``files``.

    At most ``max_open`` files stay open (least recently used closed first) and HDF5's chunk cache
    is off (each slice chunk is read once), so memory stays flat however many files there are.
    """

    def __init__(self, files: Sequence[str | os.PathLike], max_open: int = 8) -> None:
        if isinstance(files, (str, os.PathLike)):
            files = [files]
        self.files = tuple(Path(f) for f in files)
        if not self.files:
            raise DataError("dataset files: empty list; expected at least one HDF5 volume")
        depths = []
        for path in self.files:
            dset = open_hdf5_volume(path)
            depths.append(int(dset.shape[0]))
            dset.file.close()
        self.depths = tuple(depths)
        self.max_open = max_open
        self._handles: OrderedDict[int, h5py.Dataset] = OrderedDict()  # opened on first read
        self._pid = os.getpid()

    def _dataset(self, file_index: int) -> h5py.Dataset:
        if self._pid != os.getpid():  # forked into a worker: never reuse the parent's handles
            self._handles, self._pid = OrderedDict(), os.getpid()
        dset = self._handles.get(file_index)
        if dset is None:
            dset = open_hdf5_volume(self.files[file_index], chunk_cache_bytes=0)
            self._handles[file_index] = dset
            if len(self._handles) > self.max_open:
                self._handles.popitem(last=False)[1].file.close()
        self._handles.move_to_end(file_index)
        return dset

    def read(self, file_index: int, slices: Sequence[int]) -> np.ndarray:
        """HU slices ``(len(slices), H, W)`` of file ``file_index``, in the order given."""
        dset = self._dataset(file_index)
        unique = sorted(set(slices))
        if unique[-1] - unique[0] + 1 == len(unique):
            block = dset[unique[0] : unique[-1] + 1]
            return block[[s - unique[0] for s in slices]]
        return np.stack([dset[s] for s in slices])  # one chunk each; h5py fancy indexing is slow

    def close(self) -> None:
        if self._pid == os.getpid():
            for dset in self._handles.values():
                dset.file.close()
        self._handles = OrderedDict()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handles"] = OrderedDict()
        return state


class _SliceSource(Dataset):
    """Shared plumbing: files, scale, seed/epoch, flips and slice → tensor conversion."""

    def __init__(
        self,
        files: Sequence[str | os.PathLike],
        scale: str | int,
        seed: int,
        flips: bool,
        z_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        self.reader = _VolumeReader(files)
        self.size = scale_size(scale)
        self.scale = scale
        self.seed = int(seed)
        self.flips = bool(flips)
        self.epoch = 0
        lo, hi = (float(f) for f in z_range)
        if not 0.0 <= lo < hi <= 1.0:
            raise DataError(f"z_range {z_range!r}; expected fractions 0 <= lo < hi <= 1")
        #: per file, the first slice in use and how many: slices [offset, offset + depth)
        self.offsets = tuple(round(lo * d) for d in self.reader.depths)
        self.depths = tuple(
            round(hi * d) - o for d, o in zip(self.reader.depths, self.offsets, strict=True)
        )
        self._starts = np.concatenate([[0], np.cumsum(self.depths)])

    @property
    def files(self) -> tuple[Path, ...]:
        return self.reader.files

    def set_epoch(self, epoch: int) -> None:
        """Draw a fresh set of random choices (gaps, positions, flips) for ``epoch``."""
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def _check_index(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of length {len(self)}")
        return index % len(self)

    def _slice_at(self, index: int) -> tuple[int, int]:
        """Global slice ``index`` → (file index, z in the file)."""
        file_index = int(np.searchsorted(self._starts, index, side="right") - 1)
        return file_index, int(index - self._starts[file_index]) + self.offsets[file_index]

    def _plan(self, index: int) -> tuple[int, SampleInfo]:
        """(file index, sample info) of item ``index``; a pure function of seed, epoch, index."""
        raise NotImplementedError

    def locate(self, index: int) -> SampleInfo:
        """Where item ``index`` comes from (file, slices, label, flip)."""
        return self._plan(self._check_index(index))[1]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        file_index, info = self._plan(self._check_index(index))
        return self._tensor(info, file_index), info.label

    def _tensor(self, info: SampleInfo, file_index: int) -> torch.Tensor:
        """The slices of ``info`` as ``(C, H, W)`` float32 in [0, 1] at the dataset scale."""
        unit = to_scale(hu_to_unit(self.reader.read(file_index, info.slices)), self.size)
        if info.flip:
            unit = unit[..., ::-1]
        return torch.from_numpy(np.ascontiguousarray(unit, dtype=np.float32))

    def close(self) -> None:
        """Close the open HDF5 files of this process."""
        self.reader.close()


class SliceGroupDataset(_SliceSource):
    """Three slices of one volume ``(3, H, W)`` with their gap label (DiffusionBlend++ training).

    Label 1: slices (i, i+1, i+2); label 3: (i, i+3, i+6); any positive gap g in ``gap_mix``
    gives (i, i+g, i+2g). Each item draws a gap with the ``gap_mix`` probabilities, then a group
    uniformly among all groups of that gap in all files. ``flips``: random left-right flip.
    ``length`` defaults to the total number of slices.
    """

    def __init__(
        self,
        files: Sequence[str | os.PathLike],
        scale: str | int = "cpu128",
        gap_mix: Mapping[int, float] | None = None,
        length: int | None = None,
        seed: int = 0,
        flips: bool = False,
        z_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__(files, scale, seed, flips, z_range)
        gap_mix = {1: 0.5, 3: 0.5} if gap_mix is None else dict(gap_mix)
        if not gap_mix or any(
            not isinstance(g, (int, np.integer)) or g < 1 or not p >= 0 for g, p in gap_mix.items()
        ):
            raise DataError(f"gap_mix {gap_mix!r}; expected {{positive int gap: weight >= 0}}")
        total = float(sum(gap_mix.values()))
        if total <= 0:
            raise DataError(f"gap_mix {gap_mix!r}; expected a positive total weight")
        self.gaps = tuple(int(g) for g in gap_mix)
        self.probs = np.array([gap_mix[g] / total for g in self.gaps])
        self._group_starts = {}
        for gap, prob in zip(self.gaps, self.probs, strict=True):
            counts = [max(0, depth - 2 * gap) for depth in self.depths]
            if prob > 0 and sum(counts) == 0:
                raise DataError(
                    f"gap {gap} needs volumes of at least {2 * gap + 1} slices; the files have "
                    f"{list(self.depths)} slices in use"
                )
            self._group_starts[gap] = np.concatenate([[0], np.cumsum(counts)])
        self.length = sum(self.depths) if length is None else int(length)
        if self.length < 1:
            raise DataError(f"length {length!r}; expected a positive number of items")

    def __len__(self) -> int:
        return self.length

    def _plan(self, index: int) -> tuple[int, SampleInfo]:
        rng = self._rng(index)
        gap = self.gaps[int(rng.choice(len(self.gaps), p=self.probs))]
        starts = self._group_starts[gap]
        pick = int(rng.integers(starts[-1]))
        file_index = int(np.searchsorted(starts, pick, side="right") - 1)
        first = pick - int(starts[file_index]) + self.offsets[file_index]
        flip = self.flips and bool(rng.random() < 0.5)
        slices = (first, first + gap, first + 2 * gap)
        return file_index, SampleInfo(self.files[file_index], slices, gap, flip)


class SliceDataset(_SliceSource):
    """Every slice of every file once: ``(x (1, H, W), 0)`` for a 2-D prior."""

    def __init__(
        self,
        files: Sequence[str | os.PathLike],
        scale: str | int = "cpu128",
        seed: int = 0,
        flips: bool = False,
        z_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__(files, scale, seed, flips, z_range)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _plan(self, index: int) -> tuple[int, SampleInfo]:
        file_index, z = self._slice_at(index)
        flip = self.flips and bool(self._rng(index).random() < 0.5)
        return file_index, SampleInfo(self.files[file_index], (z,), 0, flip)


class WindowDataset(SliceDataset):
    """Slice i with its neighbours for DiffusionBlend: ``(x (3, H, W) = slices i-1, i, i+1, 1)``.

    The middle channel is the target; at the ends the edge slice is repeated (repetition padding).
    """

    def _plan(self, index: int) -> tuple[int, SampleInfo]:
        file_index, z = self._slice_at(index)
        first = self.offsets[file_index]
        last = first + self.depths[file_index] - 1
        flip = self.flips and bool(self._rng(index).random() < 0.5)
        slices = (max(z - 1, first), z, min(z + 1, last))
        return file_index, SampleInfo(self.files[file_index], slices, 1, flip)


class FBPPairDataset(SliceDataset):
    """(FBP, ground truth) slice pairs ``((1, H, W), (1, H, W))`` for FBP-UNet.

    ``reconstruct_fbp`` maps a ``(1, H, W)`` float tensor in [0, 1] to its FBP ``(1, H, W)``
    (e.g. ``lambda x: fbp(A, A(x))`` for a protocol's operator ``A``). It runs with torch's RNG
    seeded from (seed, epoch, index), so a noisy protocol gives the same pair in every run.
    """

    def __init__(
        self,
        files: Sequence[str | os.PathLike],
        scale: str | int,
        reconstruct_fbp: Callable[[torch.Tensor], torch.Tensor],
        seed: int = 0,
        flips: bool = False,
    ) -> None:
        if not callable(reconstruct_fbp):
            raise DataError(f"reconstruct_fbp {reconstruct_fbp!r}; expected a callable")
        super().__init__(files, scale, seed, flips)
        self.reconstruct_fbp = reconstruct_fbp

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = self._check_index(index)
        gt, _ = super().__getitem__(index)
        torch_seed = int(
            np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0]
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed)
            with torch.no_grad():
                fbp = self.reconstruct_fbp(gt)
        if not isinstance(fbp, torch.Tensor) or tuple(fbp.shape) != tuple(gt.shape):
            shape = tuple(getattr(fbp, "shape", ())) or type(fbp).__name__
            raise DataError(
                f"reconstruct_fbp returned {shape}; expected a tensor of shape {tuple(gt.shape)}"
            )
        return fbp.detach().to("cpu", torch.float32), gt
