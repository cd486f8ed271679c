"""Protocol scaling (``shared/reference/protocol.md``): HU ↔ [0, 1], in-plane resizing, z padding.

Volumes are ``(..., Z, H, W)``: z is axis -3 and is never resampled. Functions take numpy arrays or
torch tensors and return the same kind (torch tensors stay on their device).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
from scipy import ndimage

from ctblend.io import DataError

__all__ = [
    "HU_MAX",
    "HU_MIN",
    "HU_RANGE",
    "SCALES",
    "body_mask",
    "crop_z",
    "downsample_inplane",
    "hu_to_unit",
    "pad_z",
    "resize_inplane",
    "scale_size",
    "to_scale",
    "unit_to_hu",
    "zero_background",
]

HU_MIN = -1024
HU_MAX = 3071
HU_RANGE = HU_MAX - HU_MIN  # 4095
SCALES = {"cpu128": 128, "paper256": 256}

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def hu_to_unit(hu: Array) -> Array:
    """Clip HU to [-1024, 3071] and map to ``(HU + 1024) / 4095`` ∈ [0, 1], float32."""
    if isinstance(hu, torch.Tensor):
        return (hu.to(torch.float32).clamp(HU_MIN, HU_MAX) - HU_MIN) / HU_RANGE
    values = np.clip(np.asarray(hu, dtype=np.float32), HU_MIN, HU_MAX)
    return ((values - np.float32(HU_MIN)) / np.float32(HU_RANGE)).astype(np.float32)


def unit_to_hu(x: Array) -> Array:
    """Inverse of :func:`hu_to_unit` on [0, 1]: ``4095 x - 1024`` (float32, no clipping)."""
    if isinstance(x, torch.Tensor):
        return x.to(torch.float32) * HU_RANGE + HU_MIN
    return (np.asarray(x, dtype=np.float32) * np.float32(HU_RANGE) + np.float32(HU_MIN)).astype(
        np.float32
    )


def scale_size(scale: str | int) -> int:
    """In-plane size of a named scale (``cpu128`` → 128, ``paper256`` → 256) or an int size."""
    if isinstance(scale, str):
        if scale not in SCALES:
            raise DataError(f"scale {scale!r} is unknown; expected one of {list(SCALES)} or an int")
        return SCALES[scale]
    if isinstance(scale, (int, np.integer)) and not isinstance(scale, bool) and scale > 0:
        return int(scale)
    raise DataError(f"scale {scale!r} is invalid; expected one of {list(SCALES)} or a positive int")


def downsample_inplane(vol: Array, factor: int) -> Array:
    """Block mean over ``factor × factor`` in-plane blocks: ``(..., H, W)`` → ``(..., H/f, W/f)``.

    Output is float32; H and W must be multiples of ``factor``.
    """
    h, w = vol.shape[-2:]
    if not isinstance(factor, (int, np.integer)) or factor < 1 or h % factor or w % factor:
        raise DataError(
            f"downsample factor {factor!r} for in-plane size {h}x{w}; expected a positive int "
            "dividing both sizes"
        )
    if isinstance(vol, torch.Tensor):
        shape = (*vol.shape[:-2], h // factor, factor, w // factor, factor)
        return vol.to(torch.float32).reshape(shape).mean(dim=(-3, -1))
    vol = np.asarray(vol)
    total = np.zeros((*vol.shape[:-2], h // factor, w // factor), dtype=np.float64)
    for i in range(factor):  # strided adds: much faster than a reduction over small axes
        for j in range(factor):
            total += vol[..., i::factor, j::factor]
    return (total / (factor * factor)).astype(np.float32)


def resize_inplane(vol: Array, size: int | tuple[int, int]) -> Array:
    """Resample ``(..., H, W)`` in-plane to ``size`` (int for square, or ``(h, w)``), float32.

    Same size: a float32 copy. Integer shrink factor on both axes: block mean
    (:func:`downsample_inplane`). Otherwise: scikit-image anti-aliased linear resize.
    """
    out_h, out_w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    h, w = vol.shape[-2:]
    if out_h < 1 or out_w < 1:
        raise DataError(f"resize target {size!r}; expected positive sizes")
    if (out_h, out_w) == (h, w):
        if isinstance(vol, torch.Tensor):
            return vol.to(torch.float32).clone()
        return np.array(vol, dtype=np.float32)
    if h % out_h == 0 and w % out_w == 0 and h // out_h == w // out_w:
        return downsample_inplane(vol, h // out_h)
    from skimage.transform import resize

    if isinstance(vol, torch.Tensor):
        values = vol.detach().to("cpu", torch.float64).numpy()
    else:
        values = np.asarray(vol, dtype=np.float64)
    lead = values.shape[:-2]
    flat = values.reshape(-1, h, w)
    out = resize(flat, (flat.shape[0], out_h, out_w), order=1, anti_aliasing=True, mode="edge")
    out = out.reshape(*lead, out_h, out_w).astype(np.float32)
    if isinstance(vol, torch.Tensor):
        return torch.from_numpy(out).to(vol.device)
    return out


def to_scale(vol_unit: Array, scale: str | int) -> Array:
    """Bring ``(..., H, W)`` to a protocol scale: ``cpu128`` (128², 2×2 block mean from 256²),
    ``paper256`` (256²) or an int size; z is untouched."""
    return resize_inplane(vol_unit, scale_size(scale))


def pad_z(vol: Array, k: int) -> tuple[Array, int]:
    """Repeat the last slice so Z (axis -3) becomes a multiple of ``k``.

    Returns ``(padded, original_z)``; :func:`crop_z` undoes it. Padding goes at the end (top).
    """
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise DataError(f"pad_z multiple k={k!r}; expected a positive int")
    if vol.ndim < 3:
        raise DataError(f"pad_z on shape {tuple(vol.shape)}; expected (..., Z, H, W)")
    z = int(vol.shape[-3])
    extra = (-z) % k
    if extra == 0:
        return vol, z
    if isinstance(vol, torch.Tensor):
        last = vol[..., -1:, :, :]
        repeat = last.expand(*last.shape[:-3], extra, *last.shape[-2:])
        return torch.cat([vol, repeat], dim=-3), z
    widths = [(0, 0)] * vol.ndim
    widths[-3] = (0, extra)
    return np.pad(vol, widths, mode="edge"), z


def crop_z(vol: Array, z: int) -> Array:
    """Keep the first ``z`` slices (axis -3): the inverse of :func:`pad_z`."""
    if not 1 <= z <= vol.shape[-3]:
        raise DataError(f"crop_z to z={z} on shape {tuple(vol.shape)}; expected 1 <= z <= Z")
    return vol[..., :z, :, :]


def body_mask(vol_unit: np.ndarray, threshold_hu: float = -500.0) -> np.ndarray:
    """Boolean body mask of a unit volume ``(Z, H, W)``.

    Voxels above ``threshold_hu``, the largest 3-D connected component (drops the table and
    noise), then holes filled slice by slice (lungs and airways count as body).
    """
    vol = np.asarray(vol_unit)
    if vol.ndim != 3:
        raise DataError(f"body_mask on shape {vol.shape}; expected a volume (Z, H, W)")
    above = vol > (threshold_hu - HU_MIN) / HU_RANGE
    labels, count = ndimage.label(above)
    if count == 0:
        return above
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    mask = labels == int(np.argmax(sizes))
    for k in range(mask.shape[0]):
        mask[k] = ndimage.binary_fill_holes(mask[k])
    return mask


def zero_background(vol_unit: Array, mask: np.ndarray | None = None) -> Array:
    """Set voxels outside the body (``mask``, default :func:`body_mask`) to 0 (air)."""
    if mask is None:
        values = vol_unit.detach().cpu().numpy() if isinstance(vol_unit, torch.Tensor) else vol_unit
        mask = body_mask(values)
    if isinstance(vol_unit, torch.Tensor):
        return vol_unit * torch.as_tensor(mask, device=vol_unit.device, dtype=vol_unit.dtype)
    return np.where(mask, vol_unit, 0).astype(np.asarray(vol_unit).dtype)
