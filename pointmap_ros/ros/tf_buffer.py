"""A small TF buffer with tf2's lookup semantics, for when ``tf2_ros`` is not installed.

``tf2_ros`` is C++-backed and has no wheel, so a pip-only environment cannot import it; the
odometry prior (ros/odometry_source.py) still has to read ``odom -> ... -> camera`` from
``/tf``. :class:`TfBuffer` is the part of tf2's ``BufferCore`` that needs: it stores the
transforms a listener receives and answers ``lookup_transform`` the way tf2 does, so the
node behaves the same whichever buffer serves it. Like ``BufferCore`` it knows nothing about
ROS communication (no rclpy; only geometry_msgs for the input type) and is not thread-safe:
its owner serialises access.

tf2 semantics kept on purpose:

* every child frame has exactly one parent; a transform naming a new parent replaces the
  old edge (tf2 re-parents the frame);
* a dynamic edge keeps its samples for ``cache_time_s`` (10 s, tf2's default) behind its
  newest one and is interpolated between the two samples around the requested stamp
  (translation linearly, rotation along the shortest arc, i.e. quaternion slerp); a static
  edge holds one transform valid at every time;
* ``lookup_transform(target, source, stamp)`` returns ``T_target_source`` (the pose of
  ``source`` in ``target``: it maps points in ``source`` into ``target``), found through the
  frames' nearest common ancestor; stamp 0 means the latest time every edge involved has;
* failures raise with tf2's wording and a ``reason`` key: unknown frame ('missing'), no
  path between the frames ('disconnected'), a stamp outside an edge's samples
  ('extrapolation', into the past or the future; tf2 never extrapolates).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np
from geometry_msgs.msg import TransformStamped

from pointmap_ros.geometry.transforms import (rotation_between, se3_compose, se3_from_rt,
                                              se3_inverse)
from pointmap_ros.ros.conversions import stamp_to_ns, transform_to_matrix

__all__ = ['TfBuffer', 'TransformLookupError', 'FrameNotFoundError', 'ConnectivityError',
           'ExtrapolationError', 'DEFAULT_CACHE_TIME_S']

#: tf2's ``BufferCore::DEFAULT_CACHE_TIME``.
DEFAULT_CACHE_TIME_S = 10.0
#: A frame tree deeper than this is a loop (tf2 gives up at the same depth).
_MAX_GRAPH_DEPTH = 1000


class TransformLookupError(Exception):
    """A transform cannot be looked up; ``reason`` is 'missing', 'disconnected' or
    'extrapolation' (the keys the node counts frames without odometry under)."""

    reason = 'missing'


class FrameNotFoundError(TransformLookupError):
    """A frame no transform ever named (tf2's ``LookupException``)."""

    reason = 'missing'


class ConnectivityError(TransformLookupError):
    """Both frames exist but lie in separate trees, or the tree has a loop (tf2's
    ``ConnectivityException``)."""

    reason = 'disconnected'


class ExtrapolationError(TransformLookupError):
    """The stamp lies before the oldest or after the newest sample of an edge on the path
    (tf2's ``ExtrapolationException``)."""

    reason = 'extrapolation'


def _seconds(stamp_ns: int) -> str:
    return f'{stamp_ns * 1e-9:.6f}'


@dataclass
class _Edge:
    """The transforms ``T_parent_child`` of one child frame, oldest first.

    Rotations are kept as matrices so interpolation and composition need no quaternion
    algebra of their own (the geometry module has it once).
    """

    parent: str
    static: bool
    authority: str
    stamps: list[int] = field(default_factory=list)
    rotations: list[np.ndarray] = field(default_factory=list)
    translations: list[np.ndarray] = field(default_factory=list)

    def insert(self, stamp_ns: int, rotation: np.ndarray, translation: np.ndarray) -> None:
        """Add a sample in stamp order; a sample with the same stamp is replaced."""
        if self.static:  # one transform for all times (tf2's StaticCache)
            self.stamps, self.rotations, self.translations = [0], [rotation], [translation]
            return
        index = bisect.bisect_left(self.stamps, stamp_ns)
        if index < len(self.stamps) and self.stamps[index] == stamp_ns:
            self.rotations[index], self.translations[index] = rotation, translation
            return
        self.stamps.insert(index, stamp_ns)
        self.rotations.insert(index, rotation)
        self.translations.insert(index, translation)

    def prune(self, oldest_kept_ns: int) -> None:
        """Forget samples older than ``oldest_kept_ns`` (never the newest)."""
        cut = min(bisect.bisect_left(self.stamps, oldest_kept_ns), len(self.stamps) - 1)
        if cut > 0:
            del self.stamps[:cut], self.rotations[:cut], self.translations[:cut]

    @property
    def newest_ns(self) -> int:
        """Stamp of the newest sample; 0 for a static edge (valid at every time)."""
        return 0 if self.static else self.stamps[-1]

    def transform_at(self, stamp_ns: int, child: str) -> np.ndarray:
        """``T_parent_child`` ``[4, 4]`` at ``stamp_ns``: exact at a sample's stamp,
        interpolated between the two samples around it.

        Raises:
            ExtrapolationError: ``stamp_ns`` lies outside the samples.
        """
        if self.static:
            return se3_from_rt(self.rotations[0], self.translations[0])
        index = bisect.bisect_left(self.stamps, stamp_ns)
        if index < len(self.stamps) and self.stamps[index] == stamp_ns:
            return se3_from_rt(self.rotations[index], self.translations[index])
        if index == 0 or index == len(self.stamps):
            raise self._extrapolation(stamp_ns, child, future=index > 0)
        before, after = index - 1, index
        fraction = ((stamp_ns - self.stamps[before])
                    / (self.stamps[after] - self.stamps[before]))
        rotation = rotation_between(self.rotations[before], self.rotations[after], fraction)
        translation = ((1.0 - fraction) * self.translations[before]
                       + fraction * self.translations[after])
        return se3_from_rt(rotation, translation)

    def _extrapolation(self, stamp_ns: int, child: str, future: bool) -> ExtrapolationError:
        if len(self.stamps) == 1:
            detail = f'the only data is at time {_seconds(self.stamps[0])}'
        elif future:
            detail = f'the latest data is at time {_seconds(self.stamps[-1])}'
        else:
            detail = f'the earliest data is at time {_seconds(self.stamps[0])}'
        direction = 'future' if future else 'past'
        return ExtrapolationError(
            f'Lookup would require extrapolation into the {direction}. Requested time '
            f'{_seconds(stamp_ns)} but {detail}, when looking up transform from frame '
            f'[{child}] to frame [{self.parent}] (published by {self.authority!r})')


class TfBuffer:
    """Transforms received on ``/tf`` and ``/tf_static``, looked up like tf2's BufferCore.

    Args:
        cache_time_s: how far behind its newest sample a dynamic edge keeps samples (s).
    """

    def __init__(self, cache_time_s: float = DEFAULT_CACHE_TIME_S):
        if not cache_time_s > 0:
            raise ValueError(f'cache_time_s must be > 0, got {cache_time_s}')
        self.cache_time_ns = int(round(cache_time_s * 1e9))
        self._edges: dict[str, _Edge] = {}  # child frame -> its edge to its parent

    # -- input ----------------------------------------------------------------------------
    def set_transform(self, transform: TransformStamped, authority: str,
                      is_static: bool = False) -> bool:
        """Store one transform; return False when tf2 would ignore it as too old (older
        than the edge's cache window behind its newest sample).

        A transform naming a different parent for its child, or switching between static
        and dynamic, replaces the child's edge (one parent per frame).

        Raises:
            ValueError: an empty or equal parent / child frame id, or a non-finite value
                (tf2 rejects these too; the caller logs them).
        """
        parent = transform.header.frame_id.lstrip('/')
        child = transform.child_frame_id.lstrip('/')
        if not parent or not child or parent == child:
            raise ValueError(f'transform from {authority!r} has unusable frame ids: parent '
                             f'{parent!r}, child {child!r}')
        rotation, translation = _rotation_translation(transform, authority)
        stamp_ns = stamp_to_ns(transform.header.stamp)
        edge = self._edges.get(child)
        if edge is None or edge.parent != parent or edge.static != is_static:
            edge = self._edges[child] = _Edge(parent, is_static, authority)
        elif not is_static and stamp_ns < edge.newest_ns - self.cache_time_ns:
            return False  # tf2's TF_OLD_DATA
        edge.authority = authority
        edge.insert(stamp_ns, rotation, translation)
        if not is_static:
            edge.prune(edge.newest_ns - self.cache_time_ns)
        return True

    def clear(self) -> None:
        """Forget every dynamic transform (after a jump back in time, as tf2's listener
        does); static transforms stay, as in tf2 (they hold at every time)."""
        self._edges = {child: edge for child, edge in self._edges.items() if edge.static}

    # -- queries --------------------------------------------------------------------------
    def frames(self) -> set[str]:
        """Every frame named by a stored transform, as parent or child."""
        return set(self._edges) | {edge.parent for edge in self._edges.values()}

    def parent_of(self, frame: str) -> str | None:
        """The parent of ``frame``, None for a root or an unknown frame."""
        edge = self._edges.get(frame)
        return None if edge is None else edge.parent

    def lookup_transform(self, target_frame: str, source_frame: str,
                         stamp_ns: int = 0) -> np.ndarray:
        """``T_target_source`` ``[4, 4]`` float64 at ``stamp_ns`` (0: the latest time every
        edge on the path has data for).

        Raises:
            FrameNotFoundError / ConnectivityError / ExtrapolationError: see the module text.
        """
        target_frame, source_frame = target_frame.lstrip('/'), source_frame.lstrip('/')
        for name, frame in (('target_frame', target_frame), ('source_frame', source_frame)):
            if frame not in self.frames():
                raise FrameNotFoundError(
                    f'"{frame}" passed to lookup_transform argument {name} does not exist. '
                    f'Known frames: {sorted(self.frames())}')
        source_chain = self._chain_to_root(source_frame)
        target_chain = self._chain_to_root(target_frame)
        ancestor = _common_ancestor(source_chain, target_chain)
        if ancestor is None:
            raise ConnectivityError(
                f'Could not find a connection between "{target_frame}" and "{source_frame}" '
                'because they are not part of the same tree. Tf has two or more unconnected '
                f'trees (roots "{target_chain[-1]}" and "{source_chain[-1]}").')
        source_path = source_chain[:source_chain.index(ancestor)]
        target_path = target_chain[:target_chain.index(ancestor)]
        if stamp_ns == 0:
            stamp_ns = self._latest_common_stamp(source_path + target_path)
        T_ancestor_source = self._pose_in_ancestor(source_path, stamp_ns)
        T_ancestor_target = self._pose_in_ancestor(target_path, stamp_ns)
        return se3_compose(se3_inverse(T_ancestor_target), T_ancestor_source)

    def _chain_to_root(self, frame: str) -> list[str]:
        """``[frame, its parent, ..., root]``."""
        chain = [frame]
        while (parent := self.parent_of(chain[-1])) is not None:
            if parent in chain or len(chain) > _MAX_GRAPH_DEPTH:
                raise ConnectivityError(f'the TF tree has a loop: {" -> ".join(chain)} -> '
                                        f'{parent}')
            chain.append(parent)
        return chain

    def _latest_common_stamp(self, children: list[str]) -> int:
        """The newest stamp at which every dynamic edge of ``children`` has data
        (0 when all are static: any time will do)."""
        newest = [self._edges[child].newest_ns for child in children
                  if not self._edges[child].static]
        return min(newest, default=0)

    def _pose_in_ancestor(self, path: list[str], stamp_ns: int) -> np.ndarray:
        """``T_ancestor_frame`` of ``path[0]``, ``path`` running up to (excluding) the
        ancestor."""
        pose = np.eye(4)
        for child in path:
            pose = se3_compose(self._edges[child].transform_at(stamp_ns, child), pose)
        return pose


def _common_ancestor(source_chain: list[str], target_chain: list[str]) -> str | None:
    """The first frame of ``source_chain`` that ``target_chain`` also contains."""
    target_frames = set(target_chain)
    return next((frame for frame in source_chain if frame in target_frames), None)


def _rotation_translation(transform: TransformStamped,
                          authority: str) -> tuple[np.ndarray, np.ndarray]:
    """Rotation matrix and translation of a message, checked finite and non-degenerate."""
    q = transform.transform.rotation
    # NaN-safe: a NaN norm fails the test too.
    usable = np.linalg.norm([q.x, q.y, q.z, q.w]) > 1e-6
    pose = transform_to_matrix(transform.transform) if usable else None
    if pose is None or not np.isfinite(pose).all():
        raise ValueError(f'transform {transform.header.frame_id!r} -> '
                         f'{transform.child_frame_id!r} from {authority!r} is not finite or '
                         f'has a zero quaternion: {transform.transform}')
    return pose[:3, :3], pose[:3, 3].copy()
