"""The exception classes of fastrnn's public API.

Every error fastrnn raises on purpose is a FastRNNError. The subclasses also derive from the
built-in exception a caller would otherwise catch (ValueError, NotImplementedError, TypeError),
so code written against plain Python conventions keeps working: an argument of the wrong type is
an ArgumentTypeError, which is both a ShapeError (as every bad argument to a call) and a TypeError.
"""


class FastRNNError(Exception):
    """Base class of every error fastrnn raises on purpose."""


class ModelFormatError(FastRNNError, ValueError):
    """A model file or layer spec is malformed, truncated, inconsistent or hostile."""


class UnsupportedError(FastRNNError, NotImplementedError):
    """A valid model or request that fastrnn does not (or cannot) run, e.g. streaming a
    bidirectional layer, or a source layer outside the pipeline."""


class ShapeError(FastRNNError, ValueError):
    """An input does not fit the model: rank, shape, dtype, token id range, lengths, state."""


class ArgumentTypeError(ShapeError, TypeError):
    """An argument of the wrong type: a str where a Model or an integer is expected, None where
    an output array is, a float slot id. Caught by `except ShapeError` and `except TypeError`."""
