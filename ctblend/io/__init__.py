"""Reading and writing CT volumes: DICOM series, HDF5, NIfTI and NumPy files.

Every reader returns a :class:`CTVolume` in one axis convention (the one of ``../shared/data/ct``):

* axis 0 (``z``): slice index, increasing inferior → superior (DICOM patient LPS ``+z``);
* axis 1 (``y``, rows): increasing anterior → posterior (LPS ``+y``);
* axis 2 (``x``, columns): increasing patient right → patient left (LPS ``+x``).

``imshow(vol.hu[k])`` shows the usual radiological axial view. ``spacing_mm`` is ``(dz, dy, dx)``.
Bad input raises :class:`DataError` (a ``ValueError``) with a one-line message naming the file, the
offending value and what was expected. Writers are atomic: they write a temporary file beside the
target and rename it, so an interrupted run never leaves a half-written file.

Modules: ``volume`` (the type, errors, axis convention), ``dicom``, ``hdf5``, ``nifti``, ``npy``
and ``read`` (``read_volume``, which dispatches on the path).
"""

from ctblend.io.dicom import read_dicom_series, write_dicom_series
from ctblend.io.hdf5 import open_hdf5_volume, read_hdf5, write_hdf5, write_volume
from ctblend.io.nifti import read_nifti
from ctblend.io.npy import read_numpy
from ctblend.io.read import read_volume
from ctblend.io.volume import CTVolume, DataError, DataWarning

__all__ = [
    "CTVolume",
    "DataError",
    "DataWarning",
    "open_hdf5_volume",
    "read_dicom_series",
    "read_hdf5",
    "read_nifti",
    "read_numpy",
    "read_volume",
    "write_dicom_series",
    "write_hdf5",
    "write_volume",
]
