"""The topology package's one exception.

Everything that goes wrong in ``topology`` because of what the caller asked for raises
:class:`TopologyError`; its message says what to change. It subclasses ``ValueError`` so code
that already catches bad arguments catches it too::

    ValueError
     └── TopologyError   bad generator arguments, unknown names, bad graph files,
                         disconnected graphs, impossible samplers
"""

from __future__ import annotations


class TopologyError(ValueError):
    """A graph, file, weight or sampler request that cannot be honoured; the message says why."""
