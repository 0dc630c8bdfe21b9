"""The errors xpcnn raises on purpose.

Every one subclasses :class:`XpcnnError` *and* the builtin a caller would expect
(ValueError / TypeError / RuntimeError), so ``except ValueError`` keeps working.
Messages name the argument, what was expected and what came.
"""


class XpcnnError(Exception):
    """Base class of every error xpcnn raises deliberately."""


class ShapeError(XpcnnError, ValueError):
    """An array has the wrong rank or shape, or a size is out of range."""


class ArgumentError(XpcnnError, ValueError):
    """A scalar or named argument (learning rate, seed, backend name, initialiser, ...) has the
    wrong type or is out of range."""


class ArgumentTypeError(XpcnnError, TypeError):
    """A non-array argument is not of the kind expected (an optimizer, a callback, a
    ``numpy.random.Generator``, a path, ...); arrays of the wrong kind are :class:`DTypeError`."""


class DTypeError(XpcnnError, TypeError):
    """An array has a dtype the operation cannot take."""


class LabelError(XpcnnError, ValueError):
    """Class labels are not integers in ``[0, num_classes)`` or do not match the batch."""


class BackendMismatchError(XpcnnError, ValueError):
    """Arrays from two array libraries or two devices met in one call."""


class BackendUnavailableError(XpcnnError, RuntimeError):
    """A backend was asked for explicitly but cannot run here; the message says why and the fix."""


class NotBuiltError(XpcnnError, RuntimeError):
    """A model or layer was used before ``build``, or backward before forward."""


class DataError(XpcnnError, ValueError):
    """A dataset file or an input batch is malformed (bad values, NaN/Inf, empty)."""


class ModelFileError(XpcnnError, ValueError):
    """A model or checkpoint file is not a valid xpcnn file; nothing from it was executed."""


class NonFiniteError(XpcnnError, FloatingPointError):
    """Training produced a NaN or Inf loss or gradient."""


class LayerNotImplementedError(XpcnnError, NotImplementedError):
    """A custom layer did not override a method it needs (forward / backward)."""


class LayerContractError(XpcnnError, RuntimeError):
    """A layer broke the layer contract (a backward that left a parameter's gradient unset)."""


class ExportError(XpcnnError, ValueError):
    """A model cannot be written as (or read back from) an ONNX graph: the message names the
    layer or graph node and why."""
