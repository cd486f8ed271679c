"""The method registry under its former name (``operators``' device checks and the scripts in
``benchmarks/`` import it from here): see :mod:`ctblend.pipeline.methods`."""

from ctblend.pipeline.methods import METHODS, PRIOR_OF_METHOD, reconstruct

__all__ = ["METHODS", "PRIOR_OF_METHOD", "reconstruct"]
