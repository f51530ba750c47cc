"""Pure-Python pairing of image / camera_info (/ depth) by header stamp, plus the watchdog.

One :class:`StampSynchronizer` per camera. Buffers are small and bounded (``queue_size``
per input) so a missing camera_info can never grow memory; every message that cannot be used
is counted under a reason key (diagnostics show them). Stamps are integer nanoseconds, so an
"exact" match is exact.

Pairing rule: an image is emitted as soon as every required input has a message within
``slop`` of its stamp (``exact``: the same stamp); the closest one wins. Older buffered
messages are then obsolete and discarded. Cameras are independent, so several cameras may
share stamps (nvblox#12).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

__all__ = ['SyncedInput', 'StampSynchronizer', 'InputWatchdog', 'no_input_warning',
           'stream_ended_message']

KINDS = ('image', 'info', 'depth')


@dataclass
class SyncedInput:
    """Messages of one camera that belong to one instant (``stamp_ns`` = image stamp)."""

    camera: str
    stamp_ns: int
    image: Any
    info: Any = None
    depth: Any = None


class StampSynchronizer:
    """Matches image, camera_info and optionally depth of one camera by stamp.

    Args:
        camera: camera name carried into :class:`SyncedInput`.
        slop_s: largest stamp difference accepted between image and info/depth, seconds.
        exact: require identical stamps (``slop_s`` ignored).
        queue_size: messages kept per input while waiting for partners (>= 1).
        use_info, use_depth: which partners an image needs.
    """

    def __init__(self, camera: str, *, slop_s: float, exact: bool = False, queue_size: int = 5,
                 use_info: bool = True, use_depth: bool = False):
        if queue_size < 1:
            raise ValueError(f'queue_size must be >= 1, got {queue_size}')
        self.camera = camera
        self.slop_ns = 0 if exact else int(round(slop_s * 1e9))
        self.required = [k for k, on in (('info', use_info), ('depth', use_depth)) if on]
        self._buf = {k: collections.deque(maxlen=queue_size) for k in KINDS}
        self._last_image_ns: int | None = None
        self._last_emitted_ns: int | None = None
        #: reason -> count of messages that were dropped before reaching inference.
        self.dropped: collections.Counter = collections.Counter()
        self.received: collections.Counter = collections.Counter()
        #: (reason, explanation) of the latest drop, for the node's log.
        self.last_drop: tuple[str, str] | None = None

    def add(self, kind: str, stamp_ns: int, msg: Any) -> SyncedInput | None:
        """Buffer one message; return the newest complete set it completes, if any."""
        if kind not in KINDS:
            raise ValueError(f'kind must be one of {KINDS}, got {kind!r}')
        self.received[kind] += 1
        if kind == 'image':
            if self._last_image_ns is not None and stamp_ns == self._last_image_ns:
                self._drop('stamp_duplicate', f'image stamp {stamp_ns * 1e-9:.9f} s repeats '
                           'the previous one')
                return None
            if self._last_image_ns is not None and stamp_ns < self._last_image_ns:
                self._drop('stamp_out_of_order', f'image stamp {stamp_ns * 1e-9:.9f} s is '
                           f'older than the previous {self._last_image_ns * 1e-9:.9f} s')
                return None
            self._last_image_ns = stamp_ns
        elif kind not in self.required:
            return None
        buf = self._buf[kind]
        if len(buf) == buf.maxlen:
            evicted_ns, _ = buf[0]
            if kind == 'image':
                self._drop('unmatched_image', self._unmatched_text(evicted_ns))
            elif self._last_emitted_ns is None or evicted_ns > self._last_emitted_ns:
                self._drop(f'unmatched_{kind}', f'{kind} at {evicted_ns * 1e-9:.9f} s matched '
                           'no image')
        buf.append((stamp_ns, msg))
        return self._match()

    def _drop(self, reason: str, text: str) -> None:
        self.dropped[reason] += 1
        self.last_drop = (reason, text)

    def _unmatched_text(self, stamp_ns: int) -> str:
        return (f'image at {stamp_ns * 1e-9:.9f} s got no {"/".join(self.required)} within '
                f'{self.slop_ns * 1e-9:.3f} s')

    def _closest(self, kind: str, stamp_ns: int) -> tuple[int, Any] | None:
        best = None
        for entry in self._buf[kind]:
            gap = abs(entry[0] - stamp_ns)
            if gap <= self.slop_ns and (best is None or gap < abs(best[0] - stamp_ns)):
                best = entry
        return best

    def _match(self) -> SyncedInput | None:
        # Newest image first: an older image matched later would only be superseded.
        for index in range(len(self._buf['image']) - 1, -1, -1):
            stamp_ns, image = self._buf['image'][index]
            partners = {k: self._closest(k, stamp_ns) for k in self.required}
            if all(p is not None for p in partners.values()):
                break
        else:
            return None
        if index:
            # Older waiting images lacked a partner when they were newest (complete sets are
            # emitted on arrival), and a newer set now makes them stale.
            for stale_ns, _ in list(self._buf['image'])[:index]:
                self._drop('unmatched_image', self._unmatched_text(stale_ns))
        for _ in range(index + 1):
            self._buf['image'].popleft()
        for kind, (partner_ns, _) in partners.items():
            buf = self._buf[kind]
            while buf and buf[0][0] <= partner_ns:
                buf.popleft()
        self._last_emitted_ns = stamp_ns
        return SyncedInput(self.camera, stamp_ns, image,
                           **{k: p[1] for k, p in partners.items()})


class InputWatchdog:
    """Remembers when usable input last arrived and says when to warn: **once** per silence.

    A silence is the time after the last usable input (or after start-up); the warning comes
    when it has lasted ``timeout_s`` and is not repeated until usable input arrives again, so
    a stream that simply ended is reported once, not every few seconds forever. Times are
    monotonic seconds supplied by the caller (wall clock, not ROS time: a paused bag must
    still trigger the warning).
    """

    def __init__(self, timeout_s: float, start_s: float):
        self.timeout_s = float(timeout_s)
        self._last_usable_s = start_s
        self._warned = False
        #: Usable input sets seen since construction (tells "stream ended" from "never came").
        self.usable_count = 0

    def note_usable(self, now_s: float, count: bool = True) -> None:
        """Usable input arrived (``count=False``: only restart the silence, e.g. on
        activation)."""
        self._last_usable_s = now_s
        self._warned = False
        self.usable_count += int(count)

    def should_warn(self, now_s: float) -> bool:
        """True once per silence, when nothing usable came for ``timeout_s``."""
        if self.timeout_s <= 0 or self._warned:
            return False
        if now_s - self._last_usable_s < self.timeout_s:
            return False
        self._warned = True
        return True

    def silent_for(self, now_s: float) -> float:
        return now_s - self._last_usable_s


def stream_ended_message(silent_s: float, usable: int, topics: list[str], qos_text: str,
                         received: dict, dropped: dict) -> str:
    """Logged once when input stops after usable sets arrived (a camera or bag finished).

    ``dropped`` must be the counts /diagnostics reports (``dropped <reason>``)."""
    return (f'Input stopped: no usable input for {silent_s:.1f} s on {", ".join(topics)} '
            f'(QoS {qos_text}) after {usable} usable input sets (stream ended?). Received: '
            f'{dict(received)}; dropped (as on /diagnostics): {dict(dropped)}. Logged once; '
            f'again only after input resumes and stops again.')


def no_input_warning(silent_s: float, topics: list[str], qos_text: str, slop_s: float,
                     exact: bool, received: dict, dropped: dict) -> str:
    """The rtabmap-style actionable warning: what we listen to, how, and the usual causes."""
    sync = 'exact stamps' if exact else f'stamps within {slop_s:.3f} s'
    return (f'No usable input for {silent_s:.1f} s. Subscribed to {", ".join(topics)} '
            f'(QoS {qos_text}); pairing requires {sync}. Received so far: {dict(received)}; '
            f'dropped: {dict(dropped)}. Usual causes: no publisher on these names (check '
            f'`ros2 topic list` and the `cameras`/topic parameters or remappings); a reliable '
            f'subscriber against a best-effort publisher (check `ros2 topic info -v`); '
            f'camera_info stamps differing from image stamps by more than the slop; header '
            f'stamps left at zero; use_sim_time mismatch with a bag played without --clock.')
