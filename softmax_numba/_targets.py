"""The checks of cross-entropy's options and targets, one set for every front end.

The in-memory :func:`softmax_numba.cross_entropy` and the lazy
:func:`softmax_numba.dask.cross_entropy` take the same arguments and refuse the same
ones with the same messages; both call these.
"""

from __future__ import annotations

import numpy as np

from softmax_numba._api import check_choice

REDUCTIONS = ("mean", "sum", "none")
#: The two kinds of target (:func:`target_kind`).
INDEX, PROBABILITY = "index", "probability"


def check_loss_options(reduction: str, label_smoothing: float) -> None:
    """``reduction`` one of :data:`REDUCTIONS`, ``label_smoothing`` in ``[0, 1]``."""
    check_choice("reduction", reduction, REDUCTIONS)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")


def target_kind(dtype, ignore_index) -> str:
    """:data:`INDEX` for integer class indices, :data:`PROBABILITY` for floating
    probabilities (bfloat16 included); ``ignore_index`` applies to the first only."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        return INDEX
    if np.issubdtype(dtype, np.floating) or dtype.name == "bfloat16":
        if ignore_index is not None:
            raise ValueError("cross_entropy(): ignore_index applies to class-index targets only")
        return PROBABILITY
    raise TypeError(
        f"cross_entropy(): target must be integer class indices or floating "
        f"probabilities, got dtype {dtype}"
    )


def check_target_shape(kind: str, target_shape, logits_shape, row_shape, axis: int) -> None:
    """Class indices have the logits' shape without the class axis (``row_shape``),
    probabilities the logits' shape; floating class indices are named as such."""
    target_shape, logits_shape, row_shape = map(tuple, (target_shape, logits_shape, row_shape))
    if kind == PROBABILITY and target_shape == row_shape != logits_shape:
        raise ValueError(
            f"cross_entropy(): target has a floating dtype and shape {target_shape}, the "
            f"logits' without axis {axis}: class indices must be integers (cast with "
            f"target.astype(np.int64)); a probability target has the logits' shape "
            f"{logits_shape}"
        )
    if kind == INDEX and target_shape != row_shape:
        raise ValueError(
            f"cross_entropy(): class-index target must have shape {row_shape} "
            f"(logits without axis {axis}), got {target_shape}"
        )
    if kind == PROBABILITY and target_shape != logits_shape:
        raise ValueError(
            f"cross_entropy(): probability target must have the logits' shape "
            f"{logits_shape}, got {target_shape}"
        )


def counted(labels: np.ndarray, ignore_index) -> np.ndarray:
    """The mask of the rows whose class index is not ``ignore_index``."""
    return labels != ignore_index if ignore_index is not None else np.ones(labels.shape, bool)


def check_class_indices(
    labels: np.ndarray, n_classes: int, ignore_index, func: str = "cross_entropy"
) -> np.ndarray:
    """The mask of the counted rows (:func:`counted`), after checking that each of
    their class indices lies in ``[0, n_classes)``."""
    valid = counted(labels, ignore_index)
    if n_classes == 0 and valid.any():
        raise ValueError(
            f"{func}(): the class axis is empty (0 classes), so no class index is valid; "
            "a loss needs at least one class"
        )
    bad = valid & ((labels < 0) | (labels >= n_classes))
    if bad.any():
        raise ValueError(
            f"{func}(): class index {labels[bad].flat[0]} is out of range for "
            f"{n_classes} classes (valid: 0..{n_classes - 1}"
            + (f", or ignore_index={ignore_index})" if ignore_index is not None else ")")
        )
    return valid


def check_probabilities(target, func: str = "cross_entropy") -> None:
    """Refuse a probability target with a negative entry (one pass of ``min``).

    PyTorch's ``cross_entropy`` documents probabilities in ``[0, 1]`` but does not
    check, and a negative ``q_j`` gives a negative loss and breaks the analysis of
    the loss as a sum of non-negative terms; NaN entries pass (they poison their row).
    Sums other than 1 are accepted, as by PyTorch."""
    if target.size and np.min(target) < 0:
        raise ValueError(
            f"{func}(): probability target has a negative entry ({np.min(target)}); "
            "probabilities must be >= 0"
        )


def check_extra_loss_options(z_loss, softcap, class_weights, n_classes: int, dtype, func: str):
    """The Liger-Kernel options: ``z_loss >= 0`` (finite), ``softcap`` ``None`` or
    ``> 0`` (finite), ``class_weights`` ``None`` or ``n_classes`` finite weights
    ``>= 0``; returns the weights in ``dtype`` (``None`` stays ``None``)."""
    if not (np.isfinite(z_loss) and z_loss >= 0):
        raise ValueError(f"{func}(): z_loss must be a finite number >= 0, got {z_loss}")
    if softcap is not None and not (np.isfinite(softcap) and softcap > 0):
        raise ValueError(f"{func}(): softcap must be None or a finite number > 0, got {softcap}")
    if class_weights is None:
        return None
    weights = np.asarray(class_weights)
    if weights.shape != (n_classes,):
        raise ValueError(
            f"{func}(): class_weights must have shape ({n_classes},) (one per class), "
            f"got {weights.shape}"
        )
    if not np.issubdtype(weights.dtype, np.number) or not np.all(np.isfinite(weights)):
        raise ValueError(f"{func}(): class_weights must be finite numbers")
    if np.any(weights < 0):
        raise ValueError(f"{func}(): class_weights must be >= 0")
    return np.ascontiguousarray(weights, dtype=dtype)
