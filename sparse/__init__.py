"""spargo's sparse package: SpaFL thresholds, magnitude pruning, density, top-k/rand-k.

Imports torch and numpy only, never another spargo package. See docs/algorithms.md §1, §2, §5, §7.
"""

from spargo.sparse.compress import randk_indices, topk
from spargo.sparse.density import DensityReport, density, mask_nbytes
from spargo.sparse.errors import SparseError, SparseTypeError, SparseValueError
from spargo.sparse.magnitude import (
    MaskedTraining,
    cubic_schedule,
    magnitude_masks,
    merge_masks,
    multiplicative_schedule,
    prunable_parameters,
)
from spargo.sparse.thresholds import (
    ThresholdConfig,
    UnitThreshold,
    apply_global_importance,
    attach_thresholds,
    make_permanent,
    masked_modules,
    set_threshold_vector,
    threshold_parameters,
    threshold_regularizer,
    threshold_vector,
    unit_masks,
)

__all__ = [
    "DensityReport",
    "MaskedTraining",
    "SparseError",
    "SparseTypeError",
    "SparseValueError",
    "ThresholdConfig",
    "UnitThreshold",
    "apply_global_importance",
    "attach_thresholds",
    "cubic_schedule",
    "density",
    "magnitude_masks",
    "make_permanent",
    "mask_nbytes",
    "masked_modules",
    "merge_masks",
    "multiplicative_schedule",
    "prunable_parameters",
    "randk_indices",
    "set_threshold_vector",
    "threshold_parameters",
    "threshold_regularizer",
    "threshold_vector",
    "topk",
    "unit_masks",
]
