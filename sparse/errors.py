"""Exception tree of the sparse package.

::

    SparseError                      root: catch this to catch everything raised here
    ├── SparseValueError(ValueError) a bad value (density outside [0, 1], α < 0, wrong length)
    └── SparseTypeError(TypeError)   an unsupported layer or tensor type
"""

from __future__ import annotations


class SparseError(Exception):
    """Root of every error raised by :mod:`sparse`."""


class SparseValueError(SparseError, ValueError):
    """An argument has a bad value; the message says what to pass instead."""


class SparseTypeError(SparseError, TypeError):
    """An argument has an unsupported type (for example a layer that cannot be masked)."""
