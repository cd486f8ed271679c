"""``python -m ctblend …`` (also what ``torchrun … -m ctblend …`` runs): the ``ctblend`` command."""

from __future__ import annotations

from ctblend.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
