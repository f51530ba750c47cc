"""The camera's pose in the robot's odometry frame at each image's stamp, read from TF.

Robots publish odometry as TF (REP-105): ``odom -> base_link -> camera_link ->
camera_optical_frame``. :class:`OdometrySource` looks up ``T_odom_cam`` for an image's
optical frame at the image's stamp; the node hands it to the pipeline as
``FrameInput.T_odom_cam`` (the odometry prior). Two interchangeable TF back ends answer the
lookup: ``tf2_ros.Buffer`` + ``TransformListener`` where tf2_ros is installed (a sourced ROS
distribution), else our :class:`~pointmap_ros.ros.tf_buffer.TfBuffer` fed by subscriptions
to ``/tf`` and ``/tf_static`` with tf2's QoS (pip-only installs, where tf2_ros has no
wheel). Both follow tf2's rules: interpolation between samples, no extrapolation.

TF for a stamp usually arrives a little after the image (the odometry filter runs behind
the camera), so a lookup may wait up to ``timeout_s`` for it. :meth:`OdometrySource.pose_at`
is therefore called on the inference worker thread, where frames wait anyway, never on the
executor (which must keep delivering the very TF messages the lookup waits for).

A frame without odometry is not an error: the pipeline then uses its map-only pose.
:class:`OdometryStats` counts such frames by reason ('missing', 'extrapolation',
'disconnected') for ``/diagnostics`` and decides what is worth a log line: the first
failure of each reason, and the return of odometry after an outage; never one per frame.
"""

from __future__ import annotations

import collections
import threading
import time

import numpy as np
from rclpy.duration import Duration
from rclpy.time import Time
from tf2_msgs.msg import TFMessage

from pointmap_ros.ros.conversions import transform_to_matrix
from pointmap_ros.ros.qos import tf_qos, tf_static_qos
from pointmap_ros.ros.tf_buffer import (DEFAULT_CACHE_TIME_S, ConnectivityError,
                                        ExtrapolationError, FrameNotFoundError, TfBuffer,
                                        TransformLookupError)

__all__ = ['OdometrySource', 'OdometryStats', 'LOOKUP_FAILURE_REASONS', 'RECENT_FRAMES']

#: Reasons a frame has no odometry (tf2's three lookup failures).
LOOKUP_FAILURE_REASONS = ('missing', 'extrapolation', 'disconnected')
#: Frames /diagnostics looks back over for its WARN (missing odometry on recent frames).
RECENT_FRAMES = 10


class OdometryStats:
    """Counts of lookups with and without odometry, and the log lines they deserve.

    Thread-safe: the worker thread records, the diagnostics timer reads.
    """

    def __init__(self, recent_frames: int = RECENT_FRAMES):
        self._lock = threading.Lock()
        self.with_odometry = 0
        self.without: collections.Counter = collections.Counter()
        self._recent: collections.deque[bool] = collections.deque(maxlen=recent_frames)
        self._reasons_logged: set[str] = set()
        self._outage_frames = 0
        self.last_error = ''

    def record_success(self) -> str | None:
        """Count a frame with odometry; return a log line when odometry came back."""
        with self._lock:
            self.with_odometry += 1
            self._recent.append(True)
            outage, self._outage_frames = self._outage_frames, 0
            self._reasons_logged.clear()  # the next outage logs its reasons again
        if outage == 0:
            return None
        return f'odometry is back after {outage} frame(s) without it'

    def record_failure(self, reason: str, detail: str) -> str | None:
        """Count a frame without odometry; return a log line for the first failure of each
        reason in an outage, else None."""
        with self._lock:
            self.without[reason] += 1
            self._recent.append(False)
            self._outage_frames += 1
            self.last_error = f'{reason}: {detail}'
            if reason in self._reasons_logged:
                return None
            self._reasons_logged.add(reason)
        return (f'no odometry ({reason}): {detail}. Frames go on with the map-only pose; '
                'logged once per reason until odometry returns, counted in /diagnostics')

    def snapshot(self) -> dict:
        """Plain-data copy for /diagnostics."""
        with self._lock:
            return {'with': self.with_odometry,
                    'without': {reason: self.without[reason]
                                for reason in LOOKUP_FAILURE_REASONS},
                    'recent_without': self._recent.count(False),
                    'recent': len(self._recent),
                    'last_error': self.last_error}


class OdometrySource:
    """``T_odom_cam`` of an image from TF, counted and logged as the node reports it.

    Build it with :meth:`from_node` (live: tf2_ros when available, else our TfBuffer behind
    /tf and /tf_static subscriptions) or :meth:`from_buffer` (a TfBuffer its owner fills:
    pointmap-replay with the bag's TF).

    Args:
        tf_lookup: answers ``lookup(target, source, stamp_ns, timeout_s) -> [4, 4]`` or raises
            :class:`~pointmap_ros.ros.tf_buffer.TransformLookupError`; has ``kind`` and
            ``close()``.
        odom_frame: the odometry frame (REP-105 ``odom``).
        logger: has ``warning`` and ``info`` (an rclpy logger or a ``logging.Logger``).
        timeout_s: longest wait for the image's transform to arrive (s).
    """

    def __init__(self, tf_lookup, odom_frame: str, logger, *, timeout_s: float = 0.05):
        self.odom_frame = odom_frame
        self.timeout_s = float(timeout_s)
        self.stats = OdometryStats()
        self._logger = logger
        self._tf = tf_lookup
        #: How TF is read, for logs and /diagnostics.
        self.kind = tf_lookup.kind

    @classmethod
    def from_node(cls, node, odom_frame: str, *, timeout_s: float = 0.05,
                  cache_time_s: float = DEFAULT_CACHE_TIME_S) -> 'OdometrySource':
        """Live TF received by ``node``'s executor: tf2_ros' Buffer and TransformListener
        where tf2_ros imports, else our TfBuffer fed by /tf and /tf_static subscriptions."""
        try:
            tf_lookup = _Tf2RosLookup(node, cache_time_s)
        except ImportError:
            tf_lookup = _SubscribedLookup(node, cache_time_s)
        return cls(tf_lookup, odom_frame, node.get_logger(), timeout_s=timeout_s)

    @classmethod
    def from_buffer(cls, buffer: TfBuffer, odom_frame: str, logger) -> 'OdometrySource':
        """A TfBuffer its owner fills, looked up without waiting (pointmap-replay feeds it the
        bag's TF and holds frames itself)."""
        return cls(_BufferLookup(buffer), odom_frame, logger, timeout_s=0.0)

    def pose_at(self, camera_frame: str, stamp_ns: int) -> np.ndarray | None:
        """``T_odom_cam`` ``[4, 4]`` float64 of ``camera_frame`` at ``stamp_ns``, or None
        (counted by reason; logged once per reason and once when odometry returns).

        Waits up to ``timeout_s`` for the transform: call it off the executor thread.
        """
        try:
            pose = self._tf.lookup(self.odom_frame, camera_frame, stamp_ns, self.timeout_s)
        except TransformLookupError as exc:
            if (line := self.stats.record_failure(exc.reason, str(exc))) is not None:
                self._logger.warning(f'[{camera_frame}] {line}')
            return None
        if (line := self.stats.record_success()) is not None:
            self._logger.info(f'[{camera_frame}] {line} ({self.odom_frame} -> {camera_frame})')
        return pose

    def snapshot(self) -> dict:
        """What /diagnostics reports about the prior (frame, TF back end, counts)."""
        return {'frame': self.odom_frame, 'source': self.kind, **self.stats.snapshot()}

    def close(self) -> None:
        """Stop receiving TF (before the node is destroyed)."""
        self._tf.close()


class _Tf2RosLookup:
    """tf2_ros' own buffer and listener (raises ImportError where tf2_ros is missing)."""

    kind = 'tf2_ros'

    def __init__(self, node, cache_time_s: float):
        import tf2_ros  # no wheel: only a sourced ROS distribution has it
        self._errors = tf2_ros
        self._buffer = tf2_ros.Buffer(cache_time=Duration(seconds=cache_time_s), node=node)
        self._listener = tf2_ros.TransformListener(self._buffer, node, spin_thread=False)

    def lookup(self, target: str, source: str, stamp_ns: int, timeout_s: float) -> np.ndarray:
        tf2 = self._errors
        try:
            transform = self._buffer.lookup_transform(
                target, source, Time(nanoseconds=stamp_ns), timeout=Duration(seconds=timeout_s))
        except tf2.ExtrapolationException as exc:
            raise ExtrapolationError(str(exc)) from exc
        except tf2.ConnectivityException as exc:
            raise ConnectivityError(str(exc)) from exc
        except tf2.TransformException as exc:  # Lookup, Timeout, InvalidArgument
            raise FrameNotFoundError(str(exc)) from exc
        return transform_to_matrix(transform.transform)

    def close(self) -> None:
        self._listener.unregister()


class _BufferLookup:
    """A TfBuffer filled by its owner; looked up at once (no one else can fill it
    meanwhile)."""

    kind = 'TfBuffer (bag)'

    def __init__(self, buffer: TfBuffer):
        self._buffer = buffer

    def lookup(self, target: str, source: str, stamp_ns: int, timeout_s: float) -> np.ndarray:
        return self._buffer.lookup_transform(target, source, stamp_ns)

    def close(self) -> None:
        pass


class _SubscribedLookup:
    """Our TfBuffer fed by /tf and /tf_static subscriptions (what tf2_ros' listener does)."""

    kind = 'TfBuffer (/tf, /tf_static)'
    #: tf2_ros' Python listener stores every transform under this authority.
    _AUTHORITY = 'default_authority'

    def __init__(self, node, cache_time_s: float):
        self._node = node
        self._buffer = TfBuffer(cache_time_s)
        self._changed = threading.Condition()  # guards the buffer; notified on new TF
        self._warned: set[str] = set()
        self._subscriptions = [
            node.create_subscription(TFMessage, '/tf', lambda msg: self._store(msg, False),
                                     tf_qos()),
            node.create_subscription(TFMessage, '/tf_static',
                                     lambda msg: self._store(msg, True), tf_static_qos())]

    def lookup(self, target: str, source: str, stamp_ns: int, timeout_s: float) -> np.ndarray:
        """Look up, waiting up to ``timeout_s`` for TF that is not there yet."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                try:
                    return self._buffer.lookup_transform(target, source, stamp_ns)
                except TransformLookupError:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise
                    self._changed.wait(remaining)

    def _store(self, msg: TFMessage, is_static: bool) -> None:
        """Executor thread: add one TFMessage and wake a waiting lookup."""
        with self._changed:
            for transform in msg.transforms:
                self._store_one(transform, is_static)
            self._changed.notify_all()

    def _store_one(self, transform, is_static: bool) -> None:
        try:
            if self._buffer.set_transform(transform, self._AUTHORITY, is_static):
                return
        except ValueError as exc:  # a broken publisher must not stop the node
            self._warn_once('invalid', f'ignoring an invalid transform: {exc}')
            return
        # Older than the cache behind the newest sample: time jumped back (a looping bag,
        # a restarted simulation). tf2_ros clears its buffer on such jumps; so do we.
        self._warn_once('jump', 'TF stamps jumped back by more than the cache time; '
                        'clearing the TF buffer (a looping bag or restarted simulation?)')
        self._buffer.clear()
        self._buffer.set_transform(transform, self._AUTHORITY, is_static)

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self._node.get_logger().warning(text)

    def close(self) -> None:
        for subscription in self._subscriptions:
            self._node.destroy_subscription(subscription)
        self._subscriptions.clear()
