"""Sliding window scheduling, keyframe pinning, eviction and the latency slot."""

import threading

import numpy as np

from pointmap_ros.pipeline.worker import LatestFrameSlot
from pointmap_ros.tracking.window import SlidingWindow, WindowFrame, view_overlap
from pointmap_ros.types import Frame


def wf(i):
    return WindowFrame(Frame(np.zeros((4, 6, 3), np.uint8), 0.1 * i, f'c/{i}'), i)


def test_schedule_keyframe_and_gaps_without_duplicates():
    evicted = []
    win = SlidingWindow(size=3, gaps=(1, 2), on_evict=evicted.append)
    frames = [wf(i) for i in range(6)]
    win.set_keyframe(frames[0])
    win.push(frames[0])
    assert [(r, f.index) for r, f in win.schedule()] == [('keyframe', 0)]  # gap1 == keyframe
    win.push(frames[1])
    assert [(r, f.index) for r, f in win.schedule()] == [('keyframe', 0), ('gap1', 1)]
    for f in frames[2:5]:
        win.push(f)
    # Frame 0 left the window but stays pinned as keyframe: its encoding is not dropped.
    assert len(win) == 3 and evicted == ['c/1']
    assert [(r, f.index) for r, f in win.schedule()] == [('keyframe', 0), ('gap1', 4),
                                                         ('gap2', 3)]
    win.set_keyframe(frames[4])  # old keyframe already out of the window -> released now
    assert evicted == ['c/1', 'c/0']
    win.push(frames[5])
    assert evicted == ['c/1', 'c/0', 'c/2']


def test_latest_slot_counts_skips_and_never_queues():
    slot = LatestFrameSlot()
    assert slot.take() == (None, 0)
    assert not slot.put('a')
    assert slot.put('b') and slot.put('c')
    assert slot.take() == ('c', 2)
    assert slot.take() == (None, 0)
    assert slot.skipped_total == 2

    def producer():
        for i in range(1000):
            slot.put(i)

    threads = [threading.Thread(target=producer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    item, skipped = slot.take()
    assert item is not None and skipped == 1999 and slot.skipped_total == 2001


def test_view_overlap_fraction():
    K = np.array([[50.0, 0, 9.5], [0, 40.0, 4.5], [0, 0, 1]])
    pts = np.zeros((10, 20, 3))
    pts[..., 2] = 1.0
    pts[:, 10:, 0] = 10.0  # right half projects far outside the reference image
    valid = np.ones((10, 20), bool)
    assert view_overlap(pts, K, valid, (10, 20)) == 0.5
    assert view_overlap(pts, K, np.zeros_like(valid), (10, 20)) == 0.0
