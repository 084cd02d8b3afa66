"""The study's grids: the full one (``make study``) and the quick one (``--quick``)."""

from __future__ import annotations

from experiments.harness import inputs, settings
from experiments.measure import overflow
from softmax_numba import registry

#: The entries of each part of the study come from their tags in the registry.
SOFTMAX_FAMILY = registry.tagged("family")
ALTERNATIVES = registry.tagged("alternative")
SCALES = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 1e2, 1e3, 1e4)
PEERS = ("scipy", "torch", "onnxruntime", "jax", "entmax")
#: The common offset ``c`` of the offset sweep, ``x = c + scale z``.
OFFSETS = (0.0, 10.0, -100.0, 100.0, 1e3, -1e4, 1e4, 1e5, -1e6, 1e6)
#: The log-domain family of the offset sweep, scored beside the peers.
OFFSET_FAMILY = registry.tagged("offsets")
OFFSET_BACKENDS = ("numpy", "cpu", "parallel", "scipy", "torch", "jax")
MB = 1 << 20


def accuracy(quick: bool) -> list[dict]:
    from experiments.measure.sweep import accuracy_cells

    if quick:
        return accuracy_cells(
            (*SOFTMAX_FAMILY, "sparsemax[pivot]", "entmax15", "sigmoid", "gaussian"),
            inputs.DTYPES,
            ("mnist", "imagenet"),
            (1e-3, 1.0, 1e2, 1e4),
            ("normal", "mnist_logits"),
            elements=settings.ACCURACY_QUICK_ELEMENTS,
        ) + accuracy_cells(
            OFFSET_FAMILY,
            ("float32", "float64"),
            ("imagenet",),
            (3.0,),
            ("normal",),
            elements=settings.ACCURACY_QUICK_ELEMENTS,
            backends=OFFSET_BACKENDS,
            offsets=(0.0, -100.0, 1e4, 1e6),
        )
    return (
        offset_sweep()
        + accuracy_cells(
            SOFTMAX_FAMILY, inputs.DTYPES, tuple(inputs.PRESETS), SCALES, inputs.DISTRIBUTIONS
        )
        + accuracy_cells(
            ALTERNATIVES,
            inputs.DTYPES,
            ("mnist", "imagenet", "attention_4096", "gpt2_vocab"),
            SCALES,
            ("normal", "dominant", "masked"),
        )
    )


def offset_sweep() -> list[dict]:
    """Logits ``c + scale z`` over :data:`OFFSETS`: the log-domain family against
    the peers at four row lengths and at the vocabulary-sized rows of
    :data:`experiments.harness.inputs.LONG_ROWS` (scale 3, a row or two each: the
    CPU engines' blocked sums, issue 27), and every registered op at one (an offset
    the alternatives are not invariant to, but their error must stay within bound)."""
    from experiments.measure.sweep import accuracy_cells

    family = accuracy_cells(
        OFFSET_FAMILY,
        ("float32", "float64"),
        ("mnist", "attention_128", "imagenet", "attention_4096"),
        (1.0, 3.0),
        ("normal",),
        backends=OFFSET_BACKENDS,
        offsets=OFFSETS,
    )
    family += accuracy_cells(
        OFFSET_FAMILY,
        ("float32", "float64"),
        tuple(inputs.LONG_ROWS),
        (3.0,),
        ("normal",),
        backends=OFFSET_BACKENDS,
        offsets=OFFSETS,
    )
    others = [name for name in (*SOFTMAX_FAMILY, *ALTERNATIVES) if name not in OFFSET_FAMILY]
    return family + accuracy_cells(
        others, ("float32", "float64"), ("imagenet",), (3.0,), ("normal",), offsets=OFFSETS
    )


def speed(quick: bool) -> list[dict]:
    from experiments.measure.sweep import speed_cells

    engines = ("numpy", "cpu", "parallel", *PEERS)
    if quick:
        return speed_cells(
            (
                "softmax[shifted]",
                "log_softmax",
                "cross_entropy",
                "sigmoid",
                "gaussian",
                "maxout[pool=4]",
            ),
            engines,
            ("float32",),
            [("imagenet", 1 * MB)],
        )
    core = ("softmax[shifted]", "softmax[online]", "log_softmax", "logsumexp", "cross_entropy")
    sizes = [(p, b) for p in inputs.PRESETS for b in (64 << 10, 4 * MB, 64 * MB)]
    sizes += [(p, 256 * MB) for p in ("imagenet", "attention_4096", "gpt2_vocab")]
    cells = speed_cells(core, engines, ("float32",), sizes)
    cells += speed_cells(
        core,
        engines,
        ("float64",),
        [(p, b) for p in ("imagenet", "attention_4096") for b in (4 * MB, 64 * MB)],
    )
    others = (
        *ALTERNATIVES,
        "softmax[naive]",
        "softmax[division_free]",
        "softmax_backward",
        "log_softmax_backward",
        "sparsemax_backward",
        "entmax15_backward",
    )
    cells += speed_cells(
        others,
        engines,
        ("float32",),
        [(p, b) for p in ("imagenet", "attention_4096") for b in (4 * MB, 64 * MB)],
    )
    return cells


def overflow_cells(quick: bool) -> list[dict]:
    if quick:
        return overflow.cells(offsets=(-1000.0, -100.0, 0.0, 10.0, 12.0, 100.0, 1000.0), rows=8)
    return overflow.cells()
