"""Bad input over real DDS: every case gives a logged reason, counted in /diagnostics, and the
node keeps publishing for the good frames that follow.

One node process (oracle backend, depth enabled so depth cases apply). Each case sends one
corrupted set, then the next good frame of the scene, and waits for (a) the drop counter of
the expected reason in /diagnostics, (b) the reason in the node's log, (c) the good frame's
cloud.
"""

import numpy as np
import pytest
from ros_harness import (Collector, ScenePublisher, oracle_args, recon_process, spin_until,
                         wait_for_node)
from sensor_msgs.msg import Image

from pointmap_ros.ros.conversions import depth_to_image

pytestmark = pytest.mark.ros  # needs rclpy and DDS


def corrupt(image, **fields):
    out = Image(header=image.header, height=image.height, width=image.width,
                encoding=image.encoding, is_bigendian=image.is_bigendian, step=image.step,
                data=bytes(image.data))
    for name, value in fields.items():
        setattr(out, name, value)
    return out


def nan_depth(image, depth):
    return depth_to_image(np.full((depth.height, depth.width), np.nan), depth.header)


def inf_depth(image, depth):
    return depth_to_image(np.full((depth.height, depth.width), np.inf), depth.header)


# name -> (reason counted, function (image, info, depth) -> (image, info, depth) to send)
CASES = {
    'unsupported encoding': ('encoding', lambda i, c, d: (corrupt(i, encoding='yuv422'), c, d)),
    'depth in a colour encoding': ('encoding',
                                   lambda i, c, d: (i, c, corrupt(d, encoding='rgb8'))),
    'step shorter than a row': ('step', lambda i, c, d: (corrupt(i, step=i.step - 1), c, d)),
    'data size != step*height': ('size', lambda i, c, d: (corrupt(i, data=bytes(i.data)[:-7]),
                                                         c, d)),
    'empty image': ('empty', lambda i, c, d: (corrupt(i, height=0, data=b''), c, d)),
    'all-NaN depth': ('depth_invalid', lambda i, c, d: (i, c, nan_depth(i, d))),
    'all-inf depth': ('depth_invalid', lambda i, c, d: (i, c, inf_depth(i, d))),
    'zero CameraInfo K': ('calibration_zero', lambda i, c, d: (i, _k(c, [0.0] * 9), d)),
    'NaN in CameraInfo K': ('calibration_nonfinite',
                            lambda i, c, d: (i, _k(c, [float('nan')] + list(c.k)[1:]), d)),
    'principal point outside the image': (
        'calibration_principal_point',
        lambda i, c, d: (i, _k(c, list(c.k)[:2] + [float(i.width + 10)] + list(c.k)[3:]), d)),
    'missing CameraInfo': ('unmatched_image', lambda i, c, d: (i, None, d)),
}


def _k(info, k):
    info.k = k
    return info


@pytest.fixture(scope='module')
def session(ros_node):
    collector = Collector(ros_node)
    publisher = ScenePublisher(ros_node, depth=True)
    with recon_process(oracle_args(use_depth=True, diagnostics_period_s=0.2)) as proc:
        wait_for_node(ros_node, proc, publisher)
        state = {'t': 0, 'expected': {}}

        def good_frame():
            stamp = publisher.publish_frame(state['t'])
            state['t'] += 1
            return stamp

        def expect_output(stamp, what):
            spin_until(ros_node, lambda: stamp in collector.stamps('points'), 30, what, proc)

        def expect_drop(reason, count):
            spin_until(ros_node, lambda: int(collector.diagnostics().get(
                f'processing/dropped {reason}', 0)) >= count, 15,
                f'{count} x {reason} in /diagnostics', proc)
            spin_until(ros_node, lambda: f'dropped frame ({reason})' in proc.output(), 10,
                       f'log line for {reason}', proc)

        good_frame()
        expect_output(good_frame(), 'first output')
        yield ros_node, publisher, collector, proc, state, good_frame, expect_output, \
            expect_drop
        assert proc.stop() == 0, proc.output()


@pytest.mark.parametrize('case', list(CASES))
def test_bad_set_is_counted_and_good_frames_continue(session, case):
    _, publisher, collector, _, state, good_frame, expect_output, expect_drop = session
    reason, make = CASES[case]
    publisher.publish(*make(*publisher.messages(state['t'])))
    state['t'] += 1
    expected = state['expected'][reason] = state['expected'].get(reason, 0) + 1
    stamp = good_frame()
    expect_output(stamp, f'output of the good frame after {case!r}')
    expect_drop(reason, expected)


def test_partly_nonfinite_depth_is_accepted(session):
    _, publisher, collector, _, state, _, expect_output, _ = session
    image, info, depth = publisher.messages(state['t'])
    values = np.frombuffer(bytes(depth.data), '<f4').reshape(depth.height, depth.width).copy()
    values[:10] = np.inf  # a few rows without measurement: normal for depth cameras
    publisher.publish(image, info, depth_to_image(values, depth.header))
    expect_output(publisher.stamp_ns(state['t']), 'output despite some inf depth pixels')
    state['t'] += 1


def test_out_of_order_and_duplicate_stamps_are_counted(session):
    _, publisher, _, _, state, good_frame, expect_output, expect_drop = session
    last = state['t'] - 1
    publisher.publish(*publisher.messages(last))          # same stamp again
    publisher.publish(*publisher.messages(last - 3))      # older stamp
    expect_output(good_frame(), 'output after stamp errors')
    expect_drop('stamp_duplicate', 1)
    expect_drop('stamp_out_of_order', 1)


def test_burst_faster_than_inference_is_bounded_and_counted(session):
    ros_node, publisher, collector, proc, state, _, expect_output, expect_drop = session
    published_before = len(collector.msgs['points'])
    first = state['t']
    for t in range(first, first + 12):  # sent back to back: far faster than ~10 Hz inference
        publisher.publish_frame(t)
    state['t'] = first + 12
    expect_output(publisher.stamp_ns(first + 11), 'the newest frame of the burst')
    spin_until(ros_node, lambda: int(collector.diagnostics().get(
        'processing/dropped superseded_before_inference', 0)) > 0, 15, 'skips counted', proc)
    processed = len(collector.msgs['points']) - published_before
    assert processed < 12, 'every burst frame was inferred: nothing was skipped'
    # One camera: its per-camera count (the worker's LatestFrameSlot, also the source of
    # PipelineOutput.skipped_frames) is the whole drop count of that reason.
    diag = collector.diagnostics()
    per_camera = [v for k, v in diag.items() if k.endswith(' superseded before inference')]
    assert per_camera == [diag['processing/dropped superseded_before_inference']], diag
    stamps = collector.stamps('points')
    assert stamps == sorted(stamps)  # never out of order, never a stale frame after a new one
