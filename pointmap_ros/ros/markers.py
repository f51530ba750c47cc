"""RViz markers for tracked objects: oriented box, id label and velocity arrow per track.

Marker ids equal track ids within three namespaces (``boxes``, ``ids``, ``velocity``), so a
track keeps its markers across frames; tracks that vanished get explicit DELETE markers
(lifetimes alone would leave boxes behind when publishing pauses).
"""

from __future__ import annotations

import colorsys

import numpy as np
from geometry_msgs.msg import Point, Vector3
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from pointmap_ros.ros.conversions import matrix_to_pose

__all__ = ['track_color', 'objects_to_markers', 'NAMESPACES']

NAMESPACES = ('boxes', 'ids', 'velocity')


def track_color(track_id: int, alpha: float = 1.0) -> ColorRGBA:
    """Stable, well-separated colour per track id (golden-ratio hue walk)."""
    r, g, b = colorsys.hsv_to_rgb((int(track_id) * 0.618034) % 1.0, 0.85, 0.95)
    return ColorRGBA(r=r, g=g, b=b, a=float(alpha))


def objects_to_markers(objects, header, previous_ids: set[int], arrow_seconds: float = 1.0,
                       up=(0.0, 0.0, 1.0)) -> tuple[MarkerArray, set[int]]:
    """Markers for ``objects`` plus DELETEs for ids in ``previous_ids`` that are gone.

    Args:
        objects: tracked objects with ``track_id``, ``T_world_obj`` [4, 4], ``extent`` [3],
            ``linear_velocity`` [3] (in ``header.frame_id``), ``is_rigid``.
        header: world-frame header stamped with the source image.
        previous_ids: track ids drawn by the previous call.
        arrow_seconds: arrow length = velocity * this (an arrow shows where the object will
            be after that long).
        up: the world frame's "up" direction (REP-103: +z; optical world: -y), where the id
            labels are placed above the boxes.

    Returns:
        The MarkerArray and the set of ids now drawn (pass it to the next call).
    """
    markers = []
    up = np.asarray(up, dtype=np.float64)
    current = {int(obj.track_id) for obj in objects}
    for obj in objects:
        tid = int(obj.track_id)
        pose = matrix_to_pose(obj.T_world_obj)
        box = Marker(header=header, ns='boxes', id=tid, type=Marker.CUBE, action=Marker.ADD,
                     pose=pose, color=track_color(tid, 0.35 if obj.is_rigid else 0.2))
        box.scale = Vector3(**dict(zip('xyz', (max(float(e), 1e-3) for e in obj.extent))))
        markers.append(box)

        label = Marker(header=header, ns='ids', id=tid, type=Marker.TEXT_VIEW_FACING,
                       action=Marker.ADD, color=track_color(tid), text=f'#{tid}')
        # A new Point: assigning pose.position would share it with the box, and the offset
        # below would move the box too.
        above = np.array([pose.position.x, pose.position.y, pose.position.z]) + up * (
            0.5 * float(np.max(obj.extent)) + 0.05)
        label.pose.position = Point(x=float(above[0]), y=float(above[1]), z=float(above[2]))
        label.pose.orientation.w = 1.0
        label.scale.z = 0.1
        markers.append(label)

        centre = np.asarray(obj.T_world_obj, dtype=np.float64)[:3, 3]
        tip = centre + arrow_seconds * np.asarray(obj.linear_velocity, dtype=np.float64)
        arrow = Marker(header=header, ns='velocity', id=tid, type=Marker.ARROW,
                       action=Marker.ADD, color=track_color(tid),
                       points=[Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))
                               for p in (centre, tip)])
        arrow.pose.orientation.w = 1.0
        arrow.scale = Vector3(x=0.02, y=0.04, z=0.06)
        markers.append(arrow)

    for tid in sorted(previous_ids - current):
        markers.extend(Marker(header=header, ns=ns, id=tid, action=Marker.DELETE)
                       for ns in NAMESPACES)
    return MarkerArray(markers=markers), current
