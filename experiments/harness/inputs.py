"""Input logits for the sweeps: distributions, model presets, dtypes."""

from __future__ import annotations

import functools

import numpy as np

#: Softmax heads of the article's models, by row length (classes or keys).
PRESETS = {
    "binary": 2,
    "mnist": 10,
    "imagenet": 1000,  # AlexNet, VGG, GoogLeNet, ResNet
    "bert_vocab": 30522,
    "gpt2_vocab": 50257,
    "attention_128": 128,
    "attention_1024": 1024,
    "attention_4096": 4096,
    "attention_16384": 16384,
}

#: Vocabulary-sized rows, for the offset sweep only (issue 27): a 32000-token
#: vocabulary (Llama 2, Mistral), Llama 3's 128256 and 2^18.  Apart from
#: :data:`PRESETS`, so that the scale and speed grids, which take every preset, keep
#: their size.
LONG_ROWS = {"vocab_32000": 32000, "llama3_vocab": 128256, "row_262144": 262144}

#: Every row length a sweep cell may name.
ROW_LENGTHS = {**PRESETS, **LONG_ROWS}

DISTRIBUTIONS = ("normal", "uniform", "dominant", "ties", "masked", "mnist_logits")

DTYPES = ("float16", "bfloat16", "float32", "float64")


def numpy_dtype(name: str) -> np.dtype:
    """The NumPy dtype of a name; bfloat16 comes from ``ml_dtypes``."""
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


@functools.cache
def _mnist_logits() -> np.ndarray:
    from experiments.measure.bhh import load_logits

    return load_logits()


def logits(
    distribution: str, rows: int, n: int, scale: float, dtype: str, seed: int = 0, offset=0.0
):
    """A ``(rows, n)`` array of logits of the given distribution times ``scale``,
    plus a common ``offset`` (softmax is shift-invariant; its log-domain relatives
    must be accurate whatever the offset).

    - ``normal``: standard normal; ``uniform``: uniform on [-1, 1];
    - ``dominant``: standard normal with one entry per row raised by 10;
    - ``ties``: values from {-1, 0, 1} (many exact ties);
    - ``masked``: standard normal with about half the entries ``-inf`` (never a
      whole row);
    - ``mnist_logits``: the MNIST pre-softmax vectors of Blanchard, Higham & Higham
      (rows drawn with replacement; ``n`` must be 10).

    The values are rounded once to ``dtype`` (beyond its range to +-inf); every
    reference starts from them.
    """
    rng = np.random.default_rng(seed)
    if distribution == "normal":
        x = rng.standard_normal((rows, n))
    elif distribution == "uniform":
        x = rng.uniform(-1, 1, (rows, n))
    elif distribution == "dominant":
        x = rng.standard_normal((rows, n))
        x[np.arange(rows), rng.integers(0, n, rows)] += 10
    elif distribution == "ties":
        x = rng.integers(-1, 2, (rows, n)).astype(np.float64)
    elif distribution == "masked":
        x = rng.standard_normal((rows, n))
        mask = rng.random((rows, n)) < 0.5
        mask[np.arange(rows), rng.integers(0, n, rows)] = False
        x[mask] = -np.inf
    elif distribution == "mnist_logits":
        if n != 10:
            raise ValueError("mnist_logits has rows of 10 classes")
        data = _mnist_logits()
        x = data[rng.integers(0, len(data), rows)]
    else:
        raise ValueError(f"unknown distribution {distribution!r}; known: {DISTRIBUTIONS}")
    # Values beyond the dtype's range round to +-inf, as any cast would.
    with np.errstate(invalid="ignore", over="ignore"):
        return (offset + x * scale).astype(numpy_dtype(dtype))
