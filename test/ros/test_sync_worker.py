"""Stamp pairing, the no-input watchdog and the keep-latest inference worker (pure Python)."""

import threading

import pytest
from helpers import wait_for

from pointmap_ros.pipeline.worker import InferenceWorker
from pointmap_ros.ros.sync import (InputWatchdog, StampSynchronizer, no_input_warning,
                                   stream_ended_message)

MS = 1_000_000  # nanoseconds


def test_pairs_by_stamp_within_slop_whatever_the_arrival_order():
    sync = StampSynchronizer('cam', slop_s=0.005)
    assert sync.add('image', 100 * MS, 'img0') is None
    out = sync.add('info', 103 * MS, 'info0')
    assert (out.stamp_ns, out.image, out.info) == (100 * MS, 'img0', 'info0')
    assert sync.add('info', 200 * MS, 'info1') is None  # info first this time
    out = sync.add('image', 198 * MS, 'img1')
    assert (out.image, out.info) == ('img1', 'info1')
    assert not sync.dropped


def test_closest_partner_wins_and_slop_is_respected():
    sync = StampSynchronizer('cam', slop_s=0.010)
    sync.add('info', 90 * MS, 'far')
    sync.add('info', 98 * MS, 'near')
    assert sync.add('image', 100 * MS, 'img').info == 'near'
    assert sync.add('image', 150 * MS, 'lonely') is None  # no info within 10 ms


def test_exact_mode_needs_identical_stamps():
    sync = StampSynchronizer('cam', slop_s=0.5, exact=True)
    sync.add('info', 100 * MS + 1, 'info')
    assert sync.add('image', 100 * MS, 'img') is None
    out = sync.add('info', 100 * MS, 'info_exact')  # the buffered image finds its partner
    assert (out.image, out.info) == ('img', 'info_exact')


def test_depth_is_required_only_when_enabled():
    sync = StampSynchronizer('cam', slop_s=0.0, use_info=True, use_depth=True)
    sync.add('image', 5 * MS, 'img')
    assert sync.add('info', 5 * MS, 'info') is None
    out = sync.add('depth', 5 * MS, 'depth')
    assert (out.info, out.depth) == ('info', 'depth')
    plain = StampSynchronizer('cam', slop_s=0.0, use_info=False)
    assert plain.add('image', 5 * MS, 'img').info is None
    assert plain.add('depth', 6 * MS, 'ignored') is None


def test_duplicate_and_out_of_order_images_are_counted():
    sync = StampSynchronizer('cam', slop_s=0.0, use_info=False)
    assert sync.add('image', 10 * MS, 'a') is not None
    assert sync.add('image', 10 * MS, 'dup') is None
    assert sync.add('image', 9 * MS, 'old') is None
    assert sync.add('image', 11 * MS, 'b') is not None
    assert sync.dropped == {'stamp_duplicate': 1, 'stamp_out_of_order': 1}


def test_buffers_are_bounded_and_evictions_counted():
    sync = StampSynchronizer('cam', slop_s=0.0, queue_size=3)
    for k in range(10):  # camera_info never comes
        assert sync.add('image', (k + 1) * MS, k) is None
    assert len(sync._buf['image']) == 3
    assert sync.dropped['unmatched_image'] == 7
    for k in range(5):  # infos that match nothing
        sync.add('info', (100 + k) * MS, k)
    assert sync.dropped['unmatched_info'] == 2


def test_newest_complete_set_drops_older_unmatched_images():
    sync = StampSynchronizer('cam', slop_s=0.0, queue_size=5)
    for k in (1, 2, 3):
        sync.add('image', k * MS, k)
    out = sync.add('info', 3 * MS, 'i3')
    assert out.image == 3
    assert sync.dropped['unmatched_image'] == 2
    assert sync.add('info', 2 * MS, 'late') is None  # older partner of a dropped image


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match='queue_size'):
        StampSynchronizer('cam', slop_s=0.0, queue_size=0)
    with pytest.raises(ValueError, match='kind'):
        StampSynchronizer('cam', slop_s=0.0).add('imu', 1, None)


def test_watchdog_warns_once_per_silence_and_names_topics():
    dog = InputWatchdog(5.0, start_s=0.0)
    assert not dog.should_warn(4.9)
    assert dog.should_warn(5.1)
    assert not dog.should_warn(6.0)  # already warned for this silence
    assert not dog.should_warn(1e6)  # ... however long it lasts (a finished stream)
    assert dog.usable_count == 0
    dog.note_usable(11.0)
    assert dog.usable_count == 1
    assert not dog.should_warn(15.0)
    assert dog.should_warn(16.1)  # input resumed and stopped again: a new silence
    dog.note_usable(17.0, count=False)  # e.g. re-activation: restarts the silence only
    assert dog.usable_count == 1 and not dog.should_warn(21.0)
    assert InputWatchdog(0.0, 0.0).should_warn(1e9) is False
    text = no_input_warning(7.0, ['/cam/image_raw', '/cam/camera_info'], 'best_effort', 0.02,
                            False, {'image': 3}, {'unmatched_image': 3})
    for part in ('/cam/image_raw', '/cam/camera_info', 'best_effort', '0.020 s',
                 'unmatched_image', 'ros2 topic info -v', 'use_sim_time'):
        assert part in text


def test_stream_ended_message_carries_the_diagnostics_counts():
    text = stream_ended_message(5.2, 30, ['/cam/image_raw'], 'best_effort', {'camera/image': 30},
                                {'superseded_before_inference': 4})
    assert "'superseded_before_inference': 4" in text and '30 usable' in text
    assert '/cam/image_raw' in text and 'once' in text


class FakeClock:
    """Manually advanced monotonic clock for rate tests (the worker waits on a condition).

    ``reads`` counts the worker's reads: it reads the clock and decides (start an item or
    wait) in one locked step, so a read after a submit proves a decision was taken."""

    def __init__(self):
        self.t = 0.0
        self.reads = 0

    def __call__(self):
        self.reads += 1
        return self.t


def test_worker_keeps_only_the_newest_item_per_camera():
    done, gate = [], threading.Event()

    def process(camera, item, skipped):
        gate.wait(5)
        done.append((camera, item, skipped))

    worker = InferenceWorker(process, lambda c, e: None, max_rate_hz=0)
    worker.start()
    try:
        worker.submit('a', 0)
        # Item 0 is then running, blocked on the gate.
        wait_for(lambda: not worker.pending, timeout=5, interval=0.01, what='item 0 taken')
        for k in range(1, 50):  # a burst far faster than inference
            worker.submit('a', k)
        worker.submit('b', 'x')
        assert worker.pending == 2  # bounded: one slot per camera
        gate.set()
        wait_for(worker.idle, timeout=5, interval=0.01, what='worker idle')
    finally:
        worker.stop()
    # The count of superseded items travels with the item that replaced them (-> the
    # pipeline's PipelineOutput.skipped_frames) and equals the worker's per-camera total.
    assert done == [('a', 0, 0), ('a', 49, 48), ('b', 'x', 0)]
    assert worker.superseded_by_camera() == {'a': 48, 'b': 0}
    assert worker.processed == 3


def test_worker_enforces_max_rate_and_reports_errors():
    clock = FakeClock()
    started, errors = [], []

    def process(camera, item, skipped):
        started.append(clock.t)
        if item == 'boom':
            raise RuntimeError('boom')

    worker = InferenceWorker(process, lambda c, e: errors.append((c, str(e))), max_rate_hz=2.0,
                             clock=clock)
    worker.start()
    try:
        worker.submit('a', 'boom')
        wait_for(worker.idle, timeout=5, interval=0.01, what='first item done')
        reads = clock.reads
        worker.submit('a', 1)
        # Two reads: at least one after the submit (one may precede it), i.e. the worker
        # has looked at the pending item and chosen to wait (it re-reads after 1 / 2 Hz).
        wait_for(lambda: clock.reads >= reads + 2, timeout=5, interval=0.01,
                 what='worker decided on item 1')
        assert len(started) == 1 and worker.pending == 1  # the clock has not advanced
        clock.t = 0.5
        worker.set_max_rate(2.0)  # wakes the waiting worker so it sees the new time
        wait_for(lambda: len(started) == 2, timeout=5, interval=0.01, what='item 1 started')
    finally:
        worker.stop()
    assert started == [0.0, 0.5]
    assert errors == [('a', 'boom')]
    with pytest.raises(ValueError):
        worker.set_max_rate(-1)
    with pytest.raises(RuntimeError, match='already started'):
        worker.start()


def test_worker_never_supersedes_a_cameras_first_item():
    """Two frames sent back to back must both reach the pipeline: the first opens the window,
    the second gives the first output (a newer frame only replaces the camera's *later*
    items)."""
    done, gate = [], threading.Event()

    def process(camera, item, skipped):
        gate.wait(5)
        done.append((camera, item, skipped))

    worker = InferenceWorker(process, lambda c, e: None, max_rate_hz=0)
    # Not started yet: nothing is taken, as when frames arrive faster than the worker wakes.
    worker.submit('a', 0)
    worker.submit('a', 1)
    assert worker.pending == 2
    worker.submit('a', 2)  # supersedes 1, never 0
    assert worker.pending == 2
    worker.start()
    try:
        gate.set()
        wait_for(worker.idle, timeout=5, interval=0.01, what='worker idle')
    finally:
        worker.stop()
    assert done == [('a', 0, 0), ('a', 2, 1)]
    assert worker.superseded_by_camera() == {'a': 1}


def test_worker_two_frame_stream_gives_both_frames():
    done = []
    worker = InferenceWorker(lambda c, i, s: done.append((c, i, s)), lambda c, e: None,
                             max_rate_hz=0)
    worker.submit('cam', 'first')
    worker.submit('cam', 'second')
    worker.start()
    try:
        wait_for(lambda: len(done) == 2, timeout=5, interval=0.01,
                 what='both frames processed')
    finally:
        worker.stop()
    assert done == [('cam', 'first', 0), ('cam', 'second', 0)]
