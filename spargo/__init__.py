"""spargo: decentralized gossip learning of sparse PyTorch models.

The namespace holds five packages (DESIGN.md, "Layout"):

- :mod:`spargo.node` — the asyncio peer (the edge install: ``pip install spargo``);
- :mod:`spargo.protocol` — the sans-IO wire format;
- :mod:`spargo.sparse` — threshold and magnitude masks, compressors;
- :mod:`spargo.topology` — graphs, mixing matrices, peer samplers;
- :mod:`spargo.sims` — the in-process network simulator (``pip install 'spargo[sim]'``).

Importing ``spargo`` imports none of them (and no torch).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("spargo")
except PackageNotFoundError:  # a checkout used without installing it
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
