"""Our PointCloud2 encoding/decoding and stamp pairing against the ROS 2 libraries users know:
``sensor_msgs_py.point_cloud2`` and ``message_filters`` (unmodified sources from
../shared/vendor/python; a ROS 2 installation provides the same packages).

Decision (docs/ros_interface.md, "Relation to sensor_msgs_py and message_filters"): the node
keeps its own implementations even where these libraries are importable, so the code that
runs is the same with and without a ROS installation, and these tests pin the parity:

- PointCloud2: our buffers are byte-identical to ``create_cloud``'s for the same fields and
  values, ``cloud_to_array`` decodes clouds ``create_cloud`` made (any field layout and
  padding), and ``read_points`` decodes ours.
- Pairing: on ordinary camera streams (same or jittered stamps, missing or early partners,
  eviction) ``StampSynchronizer`` emits exactly the pairs ``ApproximateTimeSynchronizer`` /
  ``TimeSynchronizer`` emit. Where they differ, it is by design and asserted here: a stamp
  difference of exactly ``slop`` pairs with us (message_filters requires ``< slop``), and an
  image older than one already emitted is dropped by us (counted as ``unmatched_image``),
  where message_filters would emit it out of order; the pipeline needs increasing stamps.

Skipped where ../shared is missing (a failure in CI, see helpers.ci_strict).
"""

import math

import numpy as np
import pytest

import helpers

pytest.importorskip('sensor_msgs.msg', reason='ROS 2 message wheels not installed')

from sensor_msgs.msg import CameraInfo, Image, PointField  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from pointmap_ros.ros import conversions as conv  # noqa: E402
from pointmap_ros.ros.sync import StampSynchronizer  # noqa: E402

MS = 1_000_000


@pytest.fixture(scope='module')
def point_cloud2():
    if helpers.use_vendored_ros() is None:
        helpers.skip_or_fail('../shared/vendor/python (sensor_msgs_py) not found')
    from sensor_msgs_py import point_cloud2
    return point_cloud2


@pytest.fixture(scope='module')
def message_filters():
    if helpers.use_vendored_ros() is None:
        helpers.skip_or_fail('../shared/vendor/python (message_filters) not found')
    import message_filters
    return message_filters


def scene_arrays(height=6, width=5, seed=0):
    rng = np.random.default_rng(seed)
    points = rng.normal(0, 2, (height, width, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    confidence = (1 + rng.exponential(2, (height, width))).astype(np.float32)
    valid = rng.random((height, width)) > 0.3
    return points, rgb, confidence, valid


def record_tuples(cloud) -> list[tuple]:
    """The cloud's points as plain Python tuples (what create_cloud accepts as a list)."""
    arr = conv.cloud_to_array(cloud).reshape(-1)
    return [tuple(float(v) for v in row) for row in arr.tolist()]


@pytest.mark.parametrize('stride', [1, 2])
def test_points_cloud_bytes_equal_create_cloud(point_cloud2, stride):
    points, rgb, confidence, valid = scene_arrays()
    header = Header(stamp=conv.ns_to_stamp(5 * MS), frame_id='camera_optical_frame')
    ours = conv.points_to_cloud(points, rgb, confidence, valid, header, stride)
    theirs = point_cloud2.create_cloud(header, ours.fields, record_tuples(ours))
    assert theirs.point_step == ours.point_step == 20
    assert bytes(theirs.data) == bytes(ours.data)  # NaNs and packed rgb bit-exact too
    assert ours.width * ours.height == theirs.width  # they are unorganized (height 1)
    assert (ours.is_bigendian, ours.is_dense) == (theirs.is_bigendian, theirs.is_dense)


def test_flow_and_dynamic_clouds_equal_create_cloud_message(point_cloud2):
    points, rgb, confidence, valid = scene_arrays(seed=1)
    flow = np.random.default_rng(2).normal(0, 0.1, points.shape).astype(np.float32)
    header = Header(stamp=conv.ns_to_stamp(7 * MS), frame_id='world')
    ours = conv.flow_to_cloud(points, flow, valid, header)
    theirs = point_cloud2.create_cloud(header, ours.fields, record_tuples(ours))
    assert bytes(theirs.data) == bytes(ours.data)
    # An unorganized 1 x N cloud (~/dynamic_points) is the very message create_cloud makes.
    dynamic = conv.points_to_cloud(points[valid][None], rgb[valid][None],
                                   confidence[valid][None], np.ones((1, valid.sum()), bool),
                                   header)
    assert point_cloud2.create_cloud(header, dynamic.fields, record_tuples(dynamic)) == dynamic


def test_read_points_decodes_ours(point_cloud2):
    points, rgb, confidence, valid = scene_arrays(seed=3)
    ours = conv.points_to_cloud(points, rgb, confidence, valid, Header(frame_id='c'))
    theirs = point_cloud2.read_points(ours, skip_nans=False)
    mine = conv.cloud_to_array(ours).reshape(-1)
    for name in ('x', 'y', 'z', 'rgb', 'confidence'):
        np.testing.assert_array_equal(theirs[name], mine[name])
    # skip_nans drops exactly our invalid pixels.
    assert len(point_cloud2.read_points(ours, skip_nans=True)) == int(valid.sum())
    np.testing.assert_array_equal(conv.unpack_rgb(mine['rgb']), rgb.reshape(-1, 3))


def test_cloud_to_array_decodes_create_cloud_with_other_layouts(point_cloud2):
    # Mixed types, a gap after `ring` and a point_step larger than the fields (padding), like
    # a lidar driver's cloud.
    fields = [PointField(name='x', offset=0, datatype=PointField.FLOAT32, count=1),
              PointField(name='y', offset=4, datatype=PointField.FLOAT32, count=1),
              PointField(name='z', offset=8, datatype=PointField.FLOAT32, count=1),
              PointField(name='intensity', offset=12, datatype=PointField.UINT16, count=1),
              PointField(name='ring', offset=14, datatype=PointField.UINT8, count=1),
              PointField(name='time', offset=16, datatype=PointField.FLOAT64, count=1)]
    values = [(1.5, -2.0, math.nan, 700, 3, 0.25), (0.0, 1.0, 2.0, 65535, 255, -1e-9)]
    cloud = point_cloud2.create_cloud(Header(frame_id='lidar'), fields, values, point_step=32)
    assert cloud.point_step == 32
    arr = conv.cloud_to_array(cloud)
    assert arr.shape == (1, 2)
    for k, name in enumerate(('x', 'y', 'z', 'intensity', 'ring', 'time')):
        np.testing.assert_array_equal(arr[name][0], np.array([v[k] for v in values],
                                                             dtype=arr[name].dtype))


# -- stamp pairing -----------------------------------------------------------------------------

def message(kind: str, stamp_ns: int):
    header = Header(stamp=conv.ns_to_stamp(stamp_ns), frame_id='cam')
    return Image(header=header) if kind == 'image' else CameraInfo(header=header)


def pairs_ours(sequence, *, slop_s, exact, queue_size):
    sync = StampSynchronizer('cam', slop_s=slop_s, exact=exact, queue_size=queue_size)
    out = []
    for kind, stamp in sequence:
        synced = sync.add(kind, stamp, message(kind, stamp))
        if synced is not None:
            out.append((synced.stamp_ns, conv.stamp_to_ns(synced.info.header.stamp)))
    return out, sync


def pairs_theirs(message_filters, sequence, *, slop_s, exact, queue_size):
    image_in, info_in = message_filters.SimpleFilter(), message_filters.SimpleFilter()
    if exact:
        sync = message_filters.TimeSynchronizer([image_in, info_in], queue_size)
    else:
        sync = message_filters.ApproximateTimeSynchronizer([image_in, info_in], queue_size,
                                                           slop_s)
    out = []
    sync.registerCallback(lambda image, info: out.append(
        (conv.stamp_to_ns(image.header.stamp), conv.stamp_to_ns(info.header.stamp))))
    for kind, stamp in sequence:
        (image_in if kind == 'image' else info_in).signalMessage(message(kind, stamp))
    return out


def stream(n, *, period_ms=100, info_offset_ms=0, info_first=False, skip_info=(),
           jitter_ms=0.0, seed=0):
    """A camera driver's messages: per frame an image and (unless skipped) its camera_info."""
    rng = np.random.default_rng(seed)
    sequence = []
    for k in range(n):
        image = k * period_ms * MS
        info = image + int(round((info_offset_ms + rng.uniform(-jitter_ms, jitter_ms)) * MS))
        pair = [('image', image)] + ([] if k in skip_info else [('info', info)])
        sequence += pair[::-1] if info_first else pair
    return sequence


AGREEING = {
    'identical stamps, image first': (stream(12), 0.02, False),
    'identical stamps, info first': (stream(12, info_first=True), 0.02, False),
    'jitter within the slop': (stream(20, info_offset_ms=3, jitter_ms=6, seed=4), 0.02, False),
    'missing camera_info': (stream(12, skip_info={2, 3, 7}), 0.02, False),
    'info always outside the slop': (stream(6, info_offset_ms=30), 0.02, False),
    'exact: identical stamps': (stream(10, info_first=True), 0.0, True),
    'exact: missing camera_info': (stream(10, skip_info={0, 5}), 0.0, True),
    'exact: 1 ns apart never pairs': ([('image', 5 * MS), ('info', 5 * MS + 1)] * 1, 0.0, True),
}


@pytest.mark.parametrize('name', sorted(AGREEING))
def test_pairs_equal_message_filters_on_camera_streams(message_filters, name):
    sequence, slop_s, exact = AGREEING[name]
    ours, _ = pairs_ours(sequence, slop_s=slop_s, exact=exact, queue_size=5)
    theirs = pairs_theirs(message_filters, sequence, slop_s=slop_s, exact=exact, queue_size=5)
    assert ours == theirs
    if 'missing' not in name and 'outside' not in name and '1 ns' not in name:
        assert len(ours) == len(sequence) // 2  # every frame paired


def test_difference_slop_boundary_is_inclusive_here(message_filters):
    sequence = [('image', 100 * MS), ('info', 120 * MS)]  # exactly 20 ms apart
    ours, _ = pairs_ours(sequence, slop_s=0.02, exact=False, queue_size=5)
    theirs = pairs_theirs(message_filters, sequence, slop_s=0.02, exact=False, queue_size=5)
    assert ours == [(100 * MS, 120 * MS)]  # |difference| <= sync_slop_s
    assert theirs == []  # message_filters: max - min < slop


def test_difference_late_partner_of_an_older_image_is_dropped_here(message_filters):
    # Image 0's camera_info arrives after frame 1 was complete (a slow driver thread).
    sequence = [('image', 0), ('image', 100 * MS), ('info', 100 * MS), ('info', 0)]
    ours, sync = pairs_ours(sequence, slop_s=0.02, exact=False, queue_size=5)
    theirs = pairs_theirs(message_filters, sequence, slop_s=0.02, exact=False, queue_size=5)
    assert theirs == [(100 * MS, 100 * MS), (0, 0)]  # out of stamp order
    assert ours == [(100 * MS, 100 * MS)]  # stamps only increase; image 0 counted as dropped
    assert sync.dropped['unmatched_image'] == 1
