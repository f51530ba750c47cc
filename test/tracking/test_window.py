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


def test_a_young_keyframe_brings_a_baseline_pair_that_old():
    """Frames 0.1 s apart, the keyframe switched to frame 5: the next frame (0.6 s) pairs
    with its keyframe (0.1 s back) and its previous frame, which is the keyframe, and, for
    a 0.25 s baseline, with the newest frame at least 0.25 s older (frame 3, 0.3 s back).
    Once the keyframe is that old no baseline pair is added, nor one the window already
    pairs, nor one newer than the keyframe; with no frame old enough, the oldest serves."""
    win = SlidingWindow(size=8, gaps=(1,))
    frames = [wf(i) for i in range(9)]
    for frame in frames[:6]:
        win.push(frame)
    win.set_keyframe(frames[5])

    def pairs(stamp, baseline_s=0.25):
        return [(role, frame.index) for role, frame in win.schedule(stamp, baseline_s)]

    assert pairs(0.6) == [('keyframe', 5), ('baseline', 3)]
    assert pairs(0.6, 0.0) == [('keyframe', 5)]
    assert win.schedule() == win.schedule(0.6, 0.0)  # no stamp: the gaps only
    win.push(frames[6])
    assert pairs(0.7) == [('keyframe', 5), ('gap1', 6), ('baseline', 4)]
    assert pairs(0.7, 0.2) == [('keyframe', 5), ('gap1', 6)]  # the keyframe is 0.2 s old
    assert pairs(0.7, 10.0) == [('keyframe', 5), ('gap1', 6), ('baseline', 0)]  # oldest


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
