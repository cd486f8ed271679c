"""Train / test / out-of-distribution split of a CT folder, read from its ``MANIFEST.md``.

The manifest's volume table has a ``name`` column (file stem, optionally in backticks) and a
``suggested role`` column: ``train``, ``test`` or ``out-of-distribution test`` (``ood``). Nothing
is hard-coded: a folder with another manifest of the same form splits the same way.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ctblend.io import DataError

__all__ = ["ROLES", "manifest_split"]

ROLES = ("train", "test", "ood")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _role(text: str) -> str | None:
    role = re.sub(r"[*_`]", "", text).strip().lower()
    if "out-of-distribution" in role or role.startswith("ood"):
        return "ood"
    if role in ("train", "test"):
        return role
    return None


def manifest_split(ct_dir: str | os.PathLike) -> dict[str, list[Path]]:
    """``{"train": [...], "test": [...], "ood": [...]}``: the ``.h5`` files of ``ct_dir`` by role.

    Order follows the manifest table. Every listed volume must exist as ``<name>.h5``.
    """
    ct_dir = Path(ct_dir)
    manifest = ct_dir / "MANIFEST.md"
    if not manifest.is_file():
        raise DataError(
            f"{manifest}: not found; expected a MANIFEST.md with a 'suggested role' table"
        )
    lines = manifest.read_text(encoding="utf-8").splitlines()
    header_index = next(
        (
            i
            for i, line in enumerate(lines)
            if line.lstrip().startswith("|") and "suggested role" in line.lower()
        ),
        None,
    )
    if header_index is None:
        raise DataError(
            f"{manifest}: no table with a 'suggested role' column; expected the volume table"
        )
    header = [cell.lower() for cell in _cells(lines[header_index])]
    if "name" not in header:
        raise DataError(f"{manifest}: volume table header {header}; expected a 'name' column")
    name_col, role_col = header.index("name"), header.index("suggested role")

    split: dict[str, list[Path]] = {role: [] for role in ROLES}
    for line in lines[header_index + 1 :]:
        if not line.lstrip().startswith("|"):
            break
        cells = _cells(line)
        if set("".join(cells)) <= set("-: "):
            continue  # the |---|---| separator row
        if len(cells) != len(header):
            raise DataError(
                f"{manifest}: table row {line.strip()!r} has {len(cells)} cells; "
                f"expected {len(header)}"
            )
        name = cells[name_col].strip("` ")
        role = _role(cells[role_col])
        if role is None:
            raise DataError(
                f"{manifest}: volume '{name}' has role {cells[role_col]!r}; "
                "expected train, test or out-of-distribution test"
            )
        path = ct_dir / f"{name}.h5"
        if not path.is_file():
            raise DataError(f"{manifest}: volume '{name}' is listed but {path} does not exist")
        split[role].append(path)
    if not any(split.values()):
        raise DataError(f"{manifest}: the 'suggested role' table has no rows; expected volumes")
    return split
