"""Inference off the caller's thread: a keep-latest slot per camera and a rate cap.

Plain Python (threading only, no rclpy): the ROS node is one user. The node's executor
thread only converts messages and calls :meth:`InferenceWorker.submit`, which never blocks
and never queues: each camera has a :class:`LatestFrameSlot` (the keep-latest policy), so
a newer frame replaces the pending one and is counted as superseded before inference; the
count goes to ``process`` with the frame that replaced them. The worker thread serves cameras
round-robin and starts at most ``max_rate_hz`` inferences per second in total, so latency
stays bounded by one inference instead of growing with a deep queue (opendr#275,
darknet_ros#299).

One exception to keep-latest: a camera's *first* item (the frame that opens its sliding
window, which gives no output by itself) is never superseded. Without it, a frame arriving
right after the first one would replace it before the worker takes it, become the window's
first frame, and a two-frame stream would produce nothing. The first item waits in its own
place, ahead of the camera's slot; from the second item on, the slot keeps the newest only.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable

__all__ = ['LatestFrameSlot', 'InferenceWorker']


class LatestFrameSlot:
    """Latency policy: a single slot holding the newest unprocessed input of one camera.

    The camera callback :meth:`put` s every frame; the consumer :meth:`take` s the newest one.
    A frame overwritten before it was taken is *superseded before inference* and counted, so
    the backlog is at most one frame whatever the inference speed -- never an unbounded
    queue. This is the one keep-latest implementation: :class:`InferenceWorker` keeps one per
    camera and hands the count returned by :meth:`take` to ``DynamicReconPipeline.process``
    (``PipelineOutput.skipped_frames``). Thread-safe.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._item = None
        self._skipped_since_take = 0
        #: Items superseded since construction (taken or not yet taken successors alike).
        self.skipped_total = 0

    def put(self, item) -> bool:
        """Store ``item``; returns True if an untaken older item was superseded."""
        with self._lock:
            dropped = self._item is not None
            if dropped:
                self._skipped_since_take += 1
                self.skipped_total += 1
            self._item = item
            return dropped

    def take(self) -> tuple[Any, int]:
        """``(newest item or None, items superseded since the previous take)``."""
        with self._lock:
            item, skipped = self._item, self._skipped_since_take
            self._item, self._skipped_since_take = None, 0
            return item, skipped


class InferenceWorker:
    """Runs ``process(camera, item, skipped)`` on a background thread for the newest item
    per camera.

    Args:
        process: called on the worker thread with the number of items of that camera
            superseded since its previous item was taken; exceptions go to ``on_error``.
        on_error: ``on_error(camera, exc)``, called on the worker thread; the worker continues.
        max_rate_hz: cap on inference starts per second (0 = as fast as possible).
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, process: Callable[[str, Any, int], None],
                 on_error: Callable[[str, BaseException], None], *, max_rate_hz: float,
                 clock: Callable[[], float] = time.monotonic):
        self._process = process
        self._on_error = on_error
        self._clock = clock
        self._cond = threading.Condition()
        self._slots: dict[str, LatestFrameSlot] = {}
        # First item of a camera, kept until taken (never superseded, see the module doc).
        self._first_items: dict[str, Any] = {}
        # Cameras with a pending item, once per item, in arrival order (round-robin fairness).
        self._turns: collections.deque[str] = collections.deque()
        self._stopping = False
        self._busy = False
        self._last_start = -float('inf')
        self._thread: threading.Thread | None = None
        self.min_period_s = 0.0
        self.set_max_rate(max_rate_hz)
        self.processed = 0

    def superseded_by_camera(self) -> dict[str, int]:
        """Items replaced by a newer one of the same camera before inference, per camera."""
        with self._cond:
            return {camera: slot.skipped_total for camera, slot in self._slots.items()}

    def set_max_rate(self, max_rate_hz: float) -> None:
        if max_rate_hz < 0:
            raise ValueError(f'max_rate_hz must be >= 0, got {max_rate_hz}')
        with self._cond:
            self.min_period_s = 1.0 / max_rate_hz if max_rate_hz > 0 else 0.0
            self._cond.notify_all()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError('worker already started')
        self._thread = threading.Thread(target=self._run, name='pointmap-inference',
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the thread to finish after its current item; pending items are discarded."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def submit(self, camera: str, item: Any) -> None:
        """Offer the newest item of ``camera``; replaces (and counts) any pending one, except
        the camera's first item, which is always processed."""
        with self._cond:
            if camera not in self._slots:  # first item ever: it opens the camera's window
                self._slots[camera] = LatestFrameSlot()
                self._first_items[camera] = item
                self._turns.append(camera)
            elif not self._slots[camera].put(item):  # slot was empty: queue for a turn
                self._turns.append(camera)
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        """Items waiting: at most one per camera (two while a camera's first item waits)."""
        with self._cond:
            return len(self._turns)

    def idle(self) -> bool:
        """True when nothing is pending or running."""
        with self._cond:
            return not self._turns and not self._busy

    def _next(self) -> tuple[str, Any, int] | None:
        with self._cond:
            while True:
                if self._stopping:
                    return None
                wait = self._last_start + self.min_period_s - self._clock()
                if self._turns and wait <= 0:
                    camera = self._turns.popleft()
                    self._last_start = self._clock()
                    self._busy = True
                    if camera in self._first_items:
                        return camera, self._first_items.pop(camera), 0
                    return camera, *self._slots[camera].take()
                # Waiting here (not sleeping) lets newer frames replace the pending one.
                self._cond.wait(timeout=wait if self._turns else None)

    def _run(self) -> None:
        while (job := self._next()) is not None:
            camera, item, skipped = job
            try:
                self._process(camera, item, skipped)
            except Exception as exc:  # noqa: BLE001 - reported, and the worker keeps serving
                self._on_error(camera, exc)
            finally:
                with self._cond:
                    self._busy = False
                    self.processed += 1
