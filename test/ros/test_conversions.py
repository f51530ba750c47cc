"""Message <-> NumPy conversions (pointmap_ros/ros/conversions.py): every encoding, cv_bridge
semantics (step padding, endianness), every rejection reason, PointCloud2 layout, transforms."""

import numpy as np
import pytest

pytest.importorskip('sensor_msgs.msg', reason='ROS 2 message wheels not installed')

from geometry_msgs.msg import Transform  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointField  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from pointmap_ros.errors import CalibrationError, InputError  # noqa: E402
from pointmap_ros.geometry.transforms import quat_xyzw_to_rotmat, se3_from_rt  # noqa: E402
from pointmap_ros.ros import conversions as conv  # noqa: E402

RNG = np.random.default_rng(0)
H, W = 5, 7  # asymmetric on purpose: a transposed reshape cannot pass


def make_image(pixels: np.ndarray, encoding: str, *, pad: int = 0, big_endian: bool = False):
    """Image message from ``[H, W(, C)]`` pixels, optionally with ``pad`` bytes per row."""
    wire = pixels.astype(pixels.dtype.newbyteorder('>' if big_endian else '<'))
    rows = wire.reshape(pixels.shape[0], -1).view(np.uint8)
    rows = np.concatenate([rows, np.full((rows.shape[0], pad), 0xAB, np.uint8)], axis=1)
    return Image(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
                 is_bigendian=big_endian, step=rows.shape[1], data=rows.tobytes())


RGB = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.mark.parametrize('pad', [0, 3])
@pytest.mark.parametrize('encoding,pixels', [
    ('rgb8', RGB),
    ('bgr8', RGB[:, :, ::-1]),
    ('rgba8', np.concatenate([RGB, np.full((H, W, 1), 9, np.uint8)], axis=2)),
    ('bgra8', np.concatenate([RGB[:, :, ::-1], np.full((H, W, 1), 9, np.uint8)], axis=2)),
])
def test_colour_encodings_give_rgb(encoding, pixels, pad):
    out = conv.image_to_rgb(make_image(np.ascontiguousarray(pixels), encoding, pad=pad))
    np.testing.assert_array_equal(out, RGB)
    assert out.dtype == np.uint8 and out.flags['C_CONTIGUOUS']


def test_mono_encodings_replicate_grey():
    grey = RGB[:, :, 0]
    np.testing.assert_array_equal(conv.image_to_rgb(make_image(grey, 'mono8')),
                                  np.repeat(grey[:, :, None], 3, axis=2))
    wide = grey.astype(np.uint16) * 256 + 77  # low byte must be discarded, as cv_bridge does
    for big in (False, True):
        out = conv.image_to_rgb(make_image(wide, 'mono16', pad=2, big_endian=big))
        np.testing.assert_array_equal(out[:, :, 1], grey)


@pytest.mark.parametrize('big', [False, True])
def test_depth_16uc1_is_millimetres_and_zero_is_missing(big):
    mm = RNG.integers(1, 5000, (H, W)).astype(np.uint16)
    mm[0, 0] = 0
    depth = conv.image_to_depth(make_image(mm, '16UC1', pad=2, big_endian=big))
    assert np.isnan(depth[0, 0])
    np.testing.assert_allclose(depth[1:], mm[1:] * 1e-3, rtol=1e-6)


def test_depth_32fc1_metres_nonfinite_become_nan():
    m = RNG.uniform(0.5, 4.0, (H, W)).astype(np.float32)
    m[0, :3] = [np.inf, -1.0, np.nan]
    depth = conv.image_to_depth(make_image(m, '32FC1', big_endian=True))
    assert np.isnan(depth[0, :3]).all()
    np.testing.assert_array_equal(depth[1:], m[1:])


def test_depth_to_image_round_trips_in_both_encodings():
    metres = RNG.uniform(0.3, 6.0, (H, W)).astype(np.float32)
    metres[0, :3] = [0.0, np.nan, 70.0]  # no data, no data, beyond 16UC1's 65.535 m
    header = Header(frame_id='cam')
    as_float = conv.depth_to_image(metres, header)
    assert (as_float.encoding, as_float.step, as_float.header.frame_id) == ('32FC1', W * 4, 'cam')
    np.testing.assert_array_equal(conv.image_to_depth(as_float)[1:], metres[1:])
    as_mm = conv.depth_to_image(metres, header, '16UC1')
    assert (as_mm.encoding, as_mm.step) == ('16UC1', W * 2)
    back = conv.image_to_depth(as_mm)
    assert np.isnan(back[0, :3]).all()
    np.testing.assert_allclose(back[1:], metres[1:], atol=0.0005 + 1e-6)
    with pytest.raises(ValueError, match='depth encoding'):
        conv.depth_to_image(metres, header, 'mono8')


@pytest.mark.parametrize('values', [np.full((H, W), np.nan), np.full((H, W), np.inf),
                                    np.zeros((H, W))])
def test_depth_without_any_valid_pixel_is_rejected(values):
    with pytest.raises(InputError) as err:
        conv.image_to_depth(make_image(values.astype(np.float32), '32FC1'))
    assert err.value.reason == 'depth_invalid'


def test_rejections_carry_reason_keys():
    good = make_image(RGB, 'rgb8')
    cases = {
        'encoding': Image(height=H, width=W, encoding='yuv422', step=W * 2,
                          data=bytes(H * W * 2)),
        'empty': Image(height=0, width=W, encoding='rgb8', step=W * 3, data=b''),
        'step': Image(height=H, width=W, encoding='rgb8', step=W * 3 - 1,
                      data=bytes((W * 3 - 1) * H)),
        'size': Image(height=H, width=W, encoding='rgb8', step=W * 3,
                      data=bytes(good.data)[:-1]),
    }
    for reason, msg in cases.items():
        with pytest.raises(InputError) as err:
            conv.image_to_rgb(msg)
        assert err.value.reason == reason, (reason, str(err.value))
    with pytest.raises(InputError, match='not a colour'):
        conv.image_to_rgb(make_image(np.zeros((H, W), np.float32), '32FC1'))
    with pytest.raises(InputError, match='depth encoding'):
        conv.image_to_depth(good)


def camera_info(k, height=H, width=W):
    return CameraInfo(height=height, width=width, k=[float(v) for v in k])


def test_camera_info_to_K_and_its_rejections():
    K = np.array([[50.0, 0, 3.2], [0, 60.0, 2.1], [0, 0, 1]])
    np.testing.assert_array_equal(conv.camera_info_to_K(camera_info(K.ravel()), (H, W)), K)
    np.testing.assert_array_equal(  # size 0 means "unknown", accepted
        conv.camera_info_to_K(camera_info(K.ravel(), 0, 0), (H, W)), K)
    bad = {
        'calibration_zero': camera_info(np.zeros(9)),
        'calibration_nonfinite': camera_info([np.nan] + list(K.ravel()[1:])),
        'calibration_invalid': camera_info([-1.0] + list(K.ravel()[1:])),
        'calibration_size': camera_info(K.ravel(), H + 1, W),
        # Checks of the shared validation (geometry.camera.intrinsics_from_camera_info).
        'calibration_form': camera_info(list(K.ravel()[:6]) + [0.0, 0.0, 0.0]),
        'calibration_principal_point': camera_info([50.0, 0, W + 5.0, 0, 60.0, 2.1, 0, 0, 1]),
    }
    for reason, msg in bad.items():
        with pytest.raises(CalibrationError) as err:
            conv.camera_info_to_K(msg, (H, W))
        assert err.value.reason == reason


def test_points_cloud_layout_and_round_trip():
    points = RNG.normal(size=(H, W, 3)).astype(np.float32)
    conf = RNG.uniform(1, 5, (H, W)).astype(np.float32)
    valid = RNG.random((H, W)) > 0.3
    header = Header(frame_id='cam_optical')
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = conv.points_to_cloud(points, RGB, conf, valid, header)
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (H, W, 20, 20 * W)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        (n, 4 * k, PointField.FLOAT32, 1)
        for k, n in enumerate(['x', 'y', 'z', 'rgb', 'confidence'])]
    assert not msg.is_dense and not msg.is_bigendian
    assert msg.header.stamp.sec == 12 and msg.header.stamp.nanosec == 345
    arr = conv.cloud_to_array(msg)
    xyz = np.stack([arr['x'], arr['y'], arr['z']], -1)
    np.testing.assert_array_equal(xyz[valid], points[valid])
    assert np.isnan(xyz[~valid]).all()
    np.testing.assert_array_equal(conv.unpack_rgb(arr['rgb']), RGB)
    np.testing.assert_array_equal(arr['confidence'], conf)
    # Packed rgb is 0x00RRGGBB: little-endian bytes b, g, r, 0 at offset 12.
    raw = np.frombuffer(bytes(msg.data), np.uint8).reshape(H, W, 20)
    np.testing.assert_array_equal(raw[..., 12:15], RGB[..., ::-1])
    assert (raw[..., 15] == 0).all()


def test_stride_keeps_cloud_organized():
    points = RNG.normal(size=(H, W, 3))
    msg = conv.flow_to_cloud(points, points * 2, np.ones((H, W), bool), Header(), stride=2)
    assert (msg.height, msg.width, msg.point_step) == (3, 4, 24)
    arr = conv.cloud_to_array(msg)
    np.testing.assert_allclose(arr['vx'], 2 * points[::2, ::2, 0], rtol=1e-6)
    assert [f.name for f in msg.fields] == ['x', 'y', 'z', 'vx', 'vy', 'vz']


def test_cloud_to_array_honours_padding_and_big_endian():
    # A foreign layout: x at 8, y at 0 (float64), point padding and row padding, big-endian.
    dtype = np.dtype({'names': ['y', 'x'], 'formats': ['>f8', '>f4'], 'offsets': [0, 8],
                      'itemsize': 16})
    arr = np.zeros((2, 3), dtype)
    arr['x'], arr['y'] = np.arange(6).reshape(2, 3), -np.arange(6).reshape(2, 3)
    rows = np.concatenate([arr.view(np.uint8).reshape(2, 48), np.zeros((2, 4), np.uint8)], 1)
    from sensor_msgs.msg import PointCloud2
    msg = PointCloud2(height=2, width=3, point_step=16, row_step=52, is_bigendian=True,
                      fields=[PointField(name='x', offset=8, datatype=PointField.FLOAT32,
                                         count=1),
                              PointField(name='y', offset=0, datatype=PointField.FLOAT64,
                                         count=1)],
                      data=rows.tobytes())
    out = conv.cloud_to_array(msg)
    np.testing.assert_array_equal(out['x'], np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(out['y'], -np.arange(6).reshape(2, 3))


def test_mask_and_instance_images():
    mask = RNG.random((H, W)) > 0.5
    msg = conv.mask_to_image(mask, Header(frame_id='f'))
    assert (msg.encoding, msg.step, msg.header.frame_id) == ('mono8', W, 'f')
    np.testing.assert_array_equal(conv.image_to_array(msg), np.where(mask, 255, 0))
    ids = RNG.integers(0, 70000, (H, W))  # > 65535 must survive (why 32SC1, not mono16)
    msg = conv.instance_ids_to_image(ids, Header())
    assert (msg.encoding, msg.step) == ('32SC1', 4 * W)
    np.testing.assert_array_equal(conv.image_to_array(msg), ids)


def test_transform_round_trip_and_quaternion_order():
    angle = 0.7
    R = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                  [0, 0, 1]])
    T = se3_from_rt(R, np.array([1.0, -2.0, 3.5]))
    msg = conv.matrix_to_transform(T, Header().stamp, 'world', 'object_3')
    q = msg.transform.rotation
    np.testing.assert_allclose([q.x, q.y, q.z, q.w], [0, 0, np.sin(angle / 2),
                                                       np.cos(angle / 2)], atol=1e-12)
    assert (msg.header.frame_id, msg.child_frame_id) == ('world', 'object_3')
    np.testing.assert_allclose(conv.transform_to_matrix(msg.transform), T, atol=1e-12)
    pose = conv.matrix_to_pose(T)
    np.testing.assert_allclose(quat_xyzw_to_rotmat(np.array(
        [pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w])),
        R, atol=1e-12)
    assert isinstance(msg.transform, Transform)


def test_stamp_to_ns_is_exact():
    header = Header()
    header.stamp.sec, header.stamp.nanosec = 1_700_000_000, 999_999_999
    assert conv.stamp_to_ns(header.stamp) == 1_700_000_000_999_999_999
