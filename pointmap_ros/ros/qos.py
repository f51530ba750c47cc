"""QoS profiles of the node's subscriptions and publishers, chosen from parameters.

Why these defaults (see docs/ros_interface.md, "QoS"):

* inputs ``sensor_data``: best effort, volatile, keep-last. A best-effort subscription accepts
  both best-effort and reliable publishers; a reliable one silently gets nothing from a
  best-effort camera driver.
* outputs ``reliable``, keep-last 2: a reliable publisher serves reliable *and* best-effort
  subscribers, so RViz (Reliable by default up to Kilted, ros2/rviz#1616) and planners both
  receive it. A shallow depth keeps a slow subscriber from building latency.
* ``/tf``: tf2's own profile (reliable, volatile, keep-last 100), so our frames mix with
  every other broadcaster; ``/tf_static`` (read for the odometry prior): tf2's static
  listener profile (reliable, transient local, keep-last 100).

Every pub/sub is also created with ``QoSOverridingOptions`` so users can override single
policies with ``qos_overrides.<topic>.<publisher|subscription>.<policy>`` parameters.
"""

from __future__ import annotations

from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSPolicyKind, QoSProfile,
                       ReliabilityPolicy)
from rclpy.qos_overriding_options import QoSOverridingOptions

from pointmap_ros.errors import ConfigError

__all__ = ['QOS_CHOICES', 'make_qos', 'tf_qos', 'tf_static_qos', 'latched_qos',
           'overriding_options', 'describe_qos']

#: Allowed values of the ``input_qos`` / ``output_qos`` parameters.
QOS_CHOICES = ('sensor_data', 'best_effort', 'reliable', 'system_default')


def make_qos(kind: str, depth: int) -> QoSProfile:
    """Profile for one of :data:`QOS_CHOICES` with keep-last ``depth``.

    ``sensor_data`` and ``best_effort`` are the same wire policy (best effort, volatile);
    both names are accepted because users know both.

    Raises:
        ConfigError: unknown ``kind`` or ``depth`` < 1.
    """
    if kind not in QOS_CHOICES:
        raise ConfigError(f'QoS {kind!r} unknown; choose one of {list(QOS_CHOICES)}',
                          name='qos', value=kind)
    if int(depth) < 1:
        raise ConfigError(f'QoS depth must be >= 1, got {depth}', name='qos_depth', value=depth)
    reliability = {
        'sensor_data': ReliabilityPolicy.BEST_EFFORT,
        'best_effort': ReliabilityPolicy.BEST_EFFORT,
        'reliable': ReliabilityPolicy.RELIABLE,
        'system_default': ReliabilityPolicy.SYSTEM_DEFAULT,
    }[kind]
    durability = (DurabilityPolicy.SYSTEM_DEFAULT if kind == 'system_default'
                  else DurabilityPolicy.VOLATILE)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth),
                      reliability=reliability, durability=durability)


def tf_qos() -> QoSProfile:
    """tf2's dynamic broadcaster profile (``tf2_ros.DynamicBroadcasterQoS``)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def tf_static_qos() -> QoSProfile:
    """tf2's static listener profile (``tf2_ros.StaticListenerQoS``): reliable, transient
    local, keep-last 100, so a listener that starts late still gets every static transform
    broadcast before it."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def latched_qos() -> QoSProfile:
    """Reliable, transient local, keep-last 1: the "latched" profile of state topics
    (``~/ready``, like ``/robot_description``): a subscriber that joins later still receives
    the last value. Subscribers must use the same profile (a volatile one also works but
    misses the past value)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def overriding_options() -> QoSOverridingOptions:
    """Let users override reliability, depth, history and durability per topic."""
    return QoSOverridingOptions(policy_kinds=(QoSPolicyKind.RELIABILITY, QoSPolicyKind.DEPTH,
                                              QoSPolicyKind.HISTORY, QoSPolicyKind.DURABILITY))


def describe_qos(profile: QoSProfile) -> str:
    """Short text for logs and the no-input warning, e.g. ``best_effort/volatile/keep_last(2)``."""
    return (f'{profile.reliability.name.lower()}/{profile.durability.name.lower()}/'
            f'{profile.history.name.lower()}({profile.depth})')
