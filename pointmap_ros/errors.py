"""Exception hierarchy of pointmap_ros.

Every error the package raises on purpose derives from :class:`PointmapError`, so a frame
callback can catch that one class, log the reason, count the drop and keep running. Any other
exception is a bug and is allowed to surface.
"""

__all__ = [
    'PointmapError',
    'InputError',
    'CalibrationError',
    'CheckpointError',
    'EngineError',
    'ConfigError',
    'PoseError',
]


class PointmapError(Exception):
    """Base class of all errors raised on purpose by pointmap_ros."""


class InputError(PointmapError, ValueError):
    """Bad input data: unsupported encoding, size mismatch, NaNs, stale/out-of-order stamps.

    ``reason`` is a short machine-readable key (e.g. ``'encoding'``, ``'size'``,
    ``'stamp_order'``) used to count drops per cause in diagnostics.
    """

    def __init__(self, message: str, reason: str = 'invalid_input', *, actual=None,
                 expected=None):
        super().__init__(message)
        self.reason = reason
        self.actual = actual
        self.expected = expected


class CalibrationError(PointmapError, ValueError):
    """Missing or unusable camera calibration (e.g. a CameraInfo with a zero K matrix)."""

    def __init__(self, message: str, reason: str = 'calibration'):
        super().__init__(message)
        self.reason = reason


class CheckpointError(PointmapError):
    """A checkpoint is corrupt, of an unknown layout, or does not match the model.

    ``missing`` and ``unexpected`` list the offending state-dict keys when known.
    """

    def __init__(self, message: str, *, missing=(), unexpected=(), mismatched=()):
        super().__init__(message)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)


class EngineError(PointmapError, RuntimeError):
    """An inference backend cannot be built, loaded or run (missing library, bad engine file,
    version or GPU mismatch)."""


class ConfigError(PointmapError, ValueError):
    """An invalid configuration or parameter value; the message says which and why."""

    def __init__(self, message: str, *, name: str | None = None, value=None):
        super().__init__(message)
        self.name = name
        self.value = value


class PoseError(PointmapError, RuntimeError):
    """The camera pose of a frame could not be estimated from otherwise valid input (e.g.
    PnP-RANSAC found no consensus in the predicted points): tracking is lost for this frame.

    Not bad input: the pipeline counts consecutive pose failures and re-anchors its world
    frame on the current frame after ``PipelineConfig.pose_reset_after`` of them.
    ``reason`` is a machine-readable key for drop counters (``'pnp_failed'``,
    ``'pnp_too_few_points'``, ``'no_points'``).
    """

    def __init__(self, message: str, reason: str = 'pose_failed'):
        super().__init__(message)
        self.reason = reason
