"""The reconstruction pipeline: method configs, the method registry, and the one path from a
volume and an acquisition to a reconstruction, its scores, figure and files.

- :mod:`~ctblend.pipeline.configs`: one frozen config per method (rejects unused options);
- :mod:`~ctblend.pipeline.methods`: ``REGISTRY`` and ``reconstruct(method, y, A, prior, config)``;
- :mod:`~ctblend.pipeline.volumes`: volumes in (files or the phantom) at a scale;
- :mod:`~ctblend.pipeline.weights`: shipped networks and prior paths;
- :mod:`~ctblend.pipeline.run`: ``Case`` → ``run_method`` → ``Outcome``, figures, files;
- :mod:`~ctblend.pipeline.recon`: one input → one reconstruction file (``ctblend recon``).
"""

from .configs import MethodConfig
from .methods import METHODS, PRIOR_OF_METHOD, REGISTRY, limited_angle, method_config, reconstruct

__all__ = [
    "METHODS",
    "PRIOR_OF_METHOD",
    "REGISTRY",
    "MethodConfig",
    "limited_angle",
    "method_config",
    "reconstruct",
]
