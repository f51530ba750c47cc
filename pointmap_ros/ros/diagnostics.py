"""What the node reports on ``/diagnostics`` (``diagnostic_msgs/DiagnosticArray``, 1 Hz).

Three statuses per node, named ``<node>: input``, ``<node>: processing`` and
``<node>: engine``: input rates per camera, output rate, per-stage milliseconds, latency from
the source stamp to publication, drop counts per reason (and their total), frames superseded
before inference per camera, and the engine's
backend/state. A fourth, ``<node>: odometry``, exists while the odometry prior is on
(parameter ``odom_frame``): frames with and without the camera's TF pose (by reason), the
pipeline's decision per camera (``PipelineOutput.odometry``), WARN while recent frames lack
odometry. :class:`NodeStats` is updated from the executor and the inference thread
(hence the lock); :func:`build_diagnostics` turns a snapshot into the message.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

__all__ = ['RateMeter', 'NodeStats', 'build_diagnostics', 'ODOMETRY_DECISIONS']

_PLAUSIBLE_LATENCY_MS = 600e3  # latency beyond 10 min means the stamps use another clock
#: ``PipelineOutput.odometry`` -> how /diagnostics words it (``<camera> odometry <words>``).
ODOMETRY_DECISIONS = {'fused': 'fused', 'odometry': 'used (odometry won)',
                      'maps': 'rejected (maps won)', 'none': 'not used'}


class RateMeter:
    """Events per second over the last ``window_s`` seconds (monotonic time from the caller)."""

    def __init__(self, window_s: float = 5.0):
        self.window_s = window_s
        self._times: collections.deque[float] = collections.deque()

    def tick(self, now_s: float) -> None:
        self._times.append(now_s)
        self._trim(now_s)

    def rate(self, now_s: float) -> float:
        self._trim(now_s)
        if len(self._times) < 2:
            return 0.0
        return (len(self._times) - 1) / max(self._times[-1] - self._times[0], 1e-9)

    def _trim(self, now_s: float) -> None:
        while self._times and now_s - self._times[0] > self.window_s:
            self._times.popleft()


class NodeStats:
    """Thread-safe counters and timings of one node."""

    def __init__(self, window: int = 20):
        self._lock = threading.Lock()
        self._window = window
        self.input_rates: dict[str, RateMeter] = collections.defaultdict(RateMeter)
        self.output_rate = RateMeter()
        self.received: collections.Counter = collections.Counter()
        self.published = 0
        self.processed = 0  # frames through the pipeline, window openers included
        self.dropped: collections.Counter = collections.Counter()
        self.stage_ms: dict[str, collections.deque] = {}
        self.latency_ms: collections.deque = collections.deque(maxlen=window)
        self.engine: dict[str, Any] = {}
        self.engine_state = 'not loaded'
        self.last_error = ''
        self.units = 'unknown (no output yet)'
        #: (camera, PipelineOutput.odometry) -> frames, while the odometry prior is on.
        self.odometry_decisions: collections.Counter = collections.Counter()
        #: camera -> published frames whose depth image was fused (PipelineOutput.depth_fused).
        self.depth_fused: collections.Counter = collections.Counter()

    def on_input(self, camera: str, now_s: float) -> None:
        with self._lock:
            self.received[camera] += 1
            self.input_rates[camera].tick(now_s)

    def on_drop(self, reason: str, count: int = 1) -> None:
        if count:
            with self._lock:
                self.dropped[reason] += count

    def on_processed(self) -> None:
        """A frame went through the pipeline (with or without outputs)."""
        with self._lock:
            self.processed += 1

    def on_output(self, now_s: float, latency_ms: float, timings_ms: dict[str, float],
                  units: str | None = None) -> None:
        with self._lock:
            self.published += 1
            if units is not None:
                self.units = units
            self.output_rate.tick(now_s)
            self.latency_ms.append(latency_ms)
            for stage, ms in timings_ms.items():
                self.stage_ms.setdefault(stage, collections.deque(maxlen=self._window)).append(
                    float(ms))

    def on_depth_fused(self, camera: str) -> None:
        """One published frame had its depth image fused into its maps (depth prior)."""
        with self._lock:
            self.depth_fused[camera] += 1

    def on_odometry_decision(self, camera: str, decision: str) -> None:
        """How odometry entered one published frame's pose (``PipelineOutput.odometry``)."""
        with self._lock:
            self.odometry_decisions[camera, decision] += 1

    def set_engine(self, state: str, info: dict | None = None, error: str = '') -> None:
        with self._lock:
            self.engine_state = state
            if info is not None:
                self.engine = dict(info)
            self.last_error = error

    def snapshot(self, now_s: float, extra_drops: dict | None = None) -> dict:
        """Plain-data copy for :func:`build_diagnostics`; ``extra_drops`` (counters owned by
        the synchronizers and the worker) are added to the drop counts."""
        def mean(values):
            return sum(values) / len(values) if values else 0.0
        with self._lock:
            return {
                'input_hz': {cam: meter.rate(now_s) for cam, meter in self.input_rates.items()},
                'received': dict(self.received),
                'output_hz': self.output_rate.rate(now_s),
                'published': self.published,
                'processed': self.processed,
                'dropped': dict(self.dropped + collections.Counter(extra_drops or {})),
                'stage_ms': {stage: mean(v) for stage, v in self.stage_ms.items()},
                'latency_ms': mean(self.latency_ms),
                'latency_max_ms': max(self.latency_ms, default=0.0),
                'engine': dict(self.engine),
                'engine_state': self.engine_state,
                'last_error': self.last_error,
                'units': self.units,
                'depth_fused': dict(self.depth_fused),
                'odometry_decisions': {f'{camera} odometry {_decision_words(decision)}': n
                                       for (camera, decision), n
                                       in sorted(self.odometry_decisions.items())},
            }


def _decision_words(decision: str) -> str:
    return ODOMETRY_DECISIONS.get(decision, decision)


def _kv(values: dict) -> list[KeyValue]:
    def fmt(v):
        return f'{v:.3f}' if isinstance(v, float) else str(v)
    return [KeyValue(key=str(k), value=fmt(v)) for k, v in values.items()]


def build_diagnostics(node_name: str, snap: dict, stamp, hardware_id: str = '') -> DiagnosticArray:
    """DiagnosticArray with the input / processing / engine statuses of one snapshot."""
    ok, warn, error = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR
    inputs = {f'{cam} rate (Hz)': hz for cam, hz in snap['input_hz'].items()}
    inputs.update({f'{cam} received': n for cam, n in snap['received'].items()})
    no_input = not any(hz > 0 for hz in snap['input_hz'].values())
    input_status = DiagnosticStatus(
        level=warn if no_input else ok, name=f'{node_name}: input', hardware_id=hardware_id,
        message='no input' if no_input else 'receiving', values=_kv(inputs))

    processing = {'output rate (Hz)': snap['output_hz'], 'published': snap['published'],
                  'processed frames': snap.get('processed', 0),
                  'latency from stamp (ms)': snap['latency_ms'],
                  'latency max (ms)': snap['latency_max_ms'],
                  'units (lengths; flow and velocities)': snap['units'],
                  'dropped total': sum(snap['dropped'].values())}
    processing.update({f'stage {k} (ms)': v for k, v in snap['stage_ms'].items()})
    processing.update({f'dropped {k}': v for k, v in sorted(snap['dropped'].items())})
    # Per camera: the worker's LatestFrameSlot counts, which it hands to the pipeline with
    # each frame (PipelineOutput.skipped_frames); docs/ros_interface.md says how they differ.
    processing.update({f'{cam} superseded before inference': n
                       for cam, n in sorted(snap.get('superseded', {}).items())})
    # DynamicReconPipeline.event_counts(): frames published with a fallback (not drops).
    processing.update({f'pipeline {k}': v
                       for k, v in sorted(snap.get('pipeline_events', {}).items())})
    # The depth prior at work (docs/pipeline.md, "Depth prior"): frames fused, per camera.
    processing.update({f'{cam} frames with depth fused': n
                       for cam, n in sorted(snap.get('depth_fused', {}).items())})
    message, level = f"{snap['output_hz']:.2f} Hz out", ok
    if snap['published'] and not -1e3 < snap['latency_ms'] < _PLAUSIBLE_LATENCY_MS:
        # Stamps from another clock: a bag without --clock/use_sim_time, or unsynced hosts.
        level = warn
        message += (f"; stamps are {snap['latency_ms'] * 1e-3:.0f} s behind this node's "
                    'clock (check use_sim_time / clock sync)')
    processing_status = DiagnosticStatus(
        level=level, name=f'{node_name}: processing', hardware_id=hardware_id,
        message=message, values=_kv(processing))

    state = snap['engine_state']
    engine = {'state': state, **snap['engine']}
    if snap['last_error']:
        engine['last error'] = snap['last_error']
    engine_status = DiagnosticStatus(
        level=error if state == 'error' else ok, name=f'{node_name}: engine',
        hardware_id=hardware_id, message=f"{snap['engine'].get('backend', '?')} {state}",
        values=_kv(engine))

    statuses = [input_status, processing_status, engine_status]
    if snap.get('odometry') is not None:
        statuses.append(_odometry_status(node_name, snap, hardware_id))
    msg = DiagnosticArray(status=statuses)
    msg.header.stamp = stamp
    return msg


def _odometry_status(node_name: str, snap: dict, hardware_id: str) -> DiagnosticStatus:
    """The odometry prior: ``snap['odometry']`` is ``OdometrySource.snapshot()``,
    ``snap['odometry_decisions']`` the per-camera counts of ``PipelineOutput.odometry``.
    WARN while any of the recent frames had no odometry: their pose is the map-only one."""
    odometry, decisions = snap['odometry'], snap.get('odometry_decisions', {})
    without = odometry['without']
    values = {'odometry frame': odometry['frame'], 'TF source': odometry['source'],
              'frames with odometry': odometry['with'],
              'frames without odometry': sum(without.values())}
    values.update({f'frames without odometry ({reason})': n for reason, n in without.items()})
    values.update(decisions)
    if odometry['last_error']:
        values['last lookup error'] = odometry['last_error']
    recent_without = odometry['recent_without']
    if recent_without:
        level = DiagnosticStatus.WARN
        message = (f"no odometry on {recent_without} of the last {odometry['recent']} frames "
                   '(map-only poses)')
    else:
        level = DiagnosticStatus.OK
        message = 'odometry on recent frames' if odometry['recent'] else 'no frames yet'
    return DiagnosticStatus(level=level, name=f'{node_name}: odometry', hardware_id=hardware_id,
                            message=message, values=_kv(values))
