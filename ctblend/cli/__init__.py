"""The ``ctblend`` command: a thin shell over the library (parse, call, print).

One module per command (``demo``, ``simulate``, ``recon``, ``train``, ``sample``, ``info``;
``bench`` and ``train-fbp-unet`` take their options from their own packages), ``common`` for
what they share and ``main`` for the parser and the entry point.

Subcommands: ``demo``, ``simulate``, ``recon``, ``train``, ``sample``, ``bench``, ``info`` (and
``train-fbp-unet``; ``bench`` and it take their options from their own modules). Each
takes ``--device``, ``--seed`` and ``--quiet``; ``--config FILE.yaml`` supplies option defaults
(keys are option names; ``train --config`` names a training preset or YAML instead) and options
given on the command line win; ``recon`` and ``train`` take ``KEY=VALUE`` overrides of the method
or training config. Progress bars go to stderr and are off under ``--quiet`` or ``CI``.

User errors (``ValueError`` — including ``DataError`` and ``CheckpointError`` — and
``FileNotFoundError``) end with one line ``ctblend: error: …`` on stderr and exit status 2;
outputs are written atomically, so a failed command leaves no file behind. Heavy modules are
imported inside the handlers, so ``--help`` answers at once.
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
