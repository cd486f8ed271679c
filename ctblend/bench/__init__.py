"""``ctblend bench``: volumes × protocols × methods (× ablations) tables, resumable.

Implements ``../shared/reference/protocol.md``: each volume (HDF5 / DICOM folder / NIfTI / npy, a
MANIFEST role ``test`` / ``ood`` / ``train`` of ``--ct-dir``, or the procedural ``phantom[:Z]``) is
scaled to protocol units x = (clip(HU) + 1024) / 4095, brought in-plane to the scale (``cpu128``:
2×2 mean of 256², ``paper256``, or an int size; z never resampled), measured under each protocol
(``svct8/6/4``, ``lact90``, optionally ``+noise``; or a 2D geometry from ``--geometry``),
reconstructed by each method, clipped to [0, 1] and scored (per-plane PSNR/SSIM mean ± std, volume
PSNR, TV-z of recon and truth) with wall time, NFE and peak memory.

Every (volume, protocol, method, ablation, seed) cell is written to ``out/cells/<key>.json`` as soon
as it finishes and skipped when present (a cell computed under other settings is an error, not
silently reused). Methods whose prior is missing give a row ``skipped: no prior (…)`` that is not
cached, so a later run with the prior fills it in. Outputs: ``results.md``, ``results.csv``,
``results.json``, ``panels/*.png`` (axial/coronal/sagittal, via ``ctblend.figures.plot_panels``),
``volumes/*.h5`` (float16 reconstructions for the panels) and ``bench.yaml`` (the settings).

Peak memory is the increase of the process's resident set size (RSS) over its value at the start
of the reconstruction, after garbage collection and glibc ``malloc_trim`` (so memory freed by
earlier cells is not silently reused), sampled every 5 ms from ``/proc/self/statm`` (elsewhere:
the increase of ``resource.getrusage`` ru_maxrss); on CUDA also ``torch.cuda.max_memory_allocated``.

The package: ``config`` (settings), ``inputs`` (volumes, acquisitions, priors), ``memory`` (peak
RSS), ``records`` (cell files and table columns), ``runner`` (the cells), ``tables`` (Markdown,
CSV, JSON, panels) and ``cli`` (the command line).
"""

from ctblend.bench.cli import add_arguments, config_from_args, run
from ctblend.bench.config import ABLATIONS, BENCH_METHODS, BENCH_PROTOCOLS, BenchConfig
from ctblend.bench.inputs import load_source, resolve_volumes
from ctblend.bench.memory import PeakMemory
from ctblend.bench.records import COLUMNS
from ctblend.bench.runner import cell_plan, run_bench

__all__ = [
    "ABLATIONS",
    "BENCH_METHODS",
    "BENCH_PROTOCOLS",
    "COLUMNS",
    "BenchConfig",
    "PeakMemory",
    "add_arguments",
    "cell_plan",
    "config_from_args",
    "load_source",
    "resolve_volumes",
    "run",
    "run_bench",
]
