"""CameraStream without DDS: real message classes, the real pipeline over the oracle engine.

The node and pointmap-replay are shells over this object, so what is checked here holds for
both: pairing, decoding and validation on arrival, the exact integer stamp, the outputs of a
frame stamped with its source image, and the typed options built once from the parameters.
"""

import dataclasses

import numpy as np
import pytest
from ros_harness import SCENE, overlay_missing

pytest.importorskip('sensor_msgs.msg', reason='ROS 2 message wheels not installed')

from std_msgs.msg import Header  # noqa: E402

from pointmap_ros.errors import CalibrationError, InputError  # noqa: E402
from pointmap_ros.ros import params as P  # noqa: E402
from pointmap_ros.ros.camera_stream import (CameraStream, InputOptions,  # noqa: E402
                                            NoPipelineError, OutputOptions, StreamFrame)
from pointmap_ros.ros.conversions import (K_to_camera_info, ns_to_stamp,  # noqa: E402
                                          rgb_to_image, stamp_to_ns)


def oracle_parameters(**overrides) -> dict:
    """Node parameter values of an oracle node over the harness scene."""
    values = P.defaults()
    values.update(backend='oracle', oracle_scene=SCENE['scene'], oracle_seed=SCENE['seed'],
                  oracle_height=SCENE['height'], oracle_width=SCENE['width'],
                  oracle_frames=SCENE['frames'], oracle_fps=SCENE['fps'], **overrides)
    assert P.validate(values) is None
    return values


@pytest.fixture(scope='module')
def scene():
    from pointmap_ros.data.scenes import SceneGenerator, live_scene_config
    return SceneGenerator(live_scene_config(SCENE['scene'], SCENE['height'], SCENE['width'],
                                            SCENE['frames'], SCENE['fps']), seed=SCENE['seed'])


def scene_messages(scene, index: int, frame_id: str = 'camera_optical_frame'):
    """(image, camera_info) of scene frame ``index``, stamped index / fps as the oracle expects."""
    rendered = scene.render(index)
    header = Header(stamp=ns_to_stamp(int(round(index * 1e9 / SCENE['fps']))),
                    frame_id=frame_id)
    return (rgb_to_image(rendered.rgb, header),
            K_to_camera_info(rendered.K, SCENE['height'], SCENE['width'], header))


def feed(stream: CameraStream, scene, index: int) -> StreamFrame | None:
    """camera_info first, then the image, as drivers usually publish."""
    image, info = scene_messages(scene, index)
    assert stream.on_message('info', info) is None
    return stream.on_message('image', image)


def oracle_stream(values: dict, namespace: str = '/camera') -> CameraStream:
    from pointmap_ros.engines.factory import create_engine
    from pointmap_ros.pipeline import DynamicReconPipeline
    stream = CameraStream.from_parameters(namespace, values)
    engine = create_engine(**P.engine_kwargs(values))  # the oracle, built by the factory
    stream.attach(DynamicReconPipeline(engine, P.pipeline_config(values)))
    return stream


# -- options ------------------------------------------------------------------------------
def test_options_are_typed_frozen_and_read_from_the_parameters():
    values = P.defaults()
    values.update(points_frame='world', cloud_stride=2, publish_object_tf=False)
    options = OutputOptions.from_parameters(values, prefix='front/')
    assert (options.points_frame, options.cloud_stride, options.publish_object_tf,
            options.prefix) == ('world', 2, False, 'front/')
    assert options.camera_child_frame('cam_optical') == 'front/cam_optical_estimated'
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.cloud_stride = 3
    assert InputOptions.from_parameters(values) == InputOptions()  # defaults agree


@pytest.mark.parametrize('field, value', [('points_frame', 'map'), ('cloud_stride', 0),
                                          ('world_frame_convention', 'enu')])
def test_output_options_reject_what_the_node_would_reject(field, value):
    with pytest.raises(ValueError, match=field):
        OutputOptions(**{field: value})


def test_input_topics_follow_the_namespace_and_the_partners_in_use():
    values = oracle_parameters(cameras=['/robot/front', '/robot/rear'], use_depth=True)
    stream = CameraStream.from_parameters('/robot/front', values)
    assert (stream.name, stream.prefix) == ('robot_front', 'robot_front/')
    assert stream.output_options.prefix == 'robot_front/'
    assert stream.input_topics() == [('image', '/robot/front/image_raw'),
                                     ('info', '/robot/front/camera_info'),
                                     ('depth', '/robot/front/depth')]
    alone = CameraStream.from_parameters('/camera', oracle_parameters(use_camera_info=False))
    assert (alone.prefix, alone.input_topics()) == ('', [('image', '/camera/image_raw')])


# -- arrival: pairing, decoding, validation -----------------------------------------------
def test_a_paired_set_becomes_a_frame_with_the_exact_stamp(scene):
    stream = CameraStream.from_parameters('/camera', oracle_parameters())
    image, info = scene_messages(scene, 0)
    stamp_ns = 1_700_000_000_123_456_789  # not representable in float64 seconds
    image.header.stamp = info.header.stamp = ns_to_stamp(stamp_ns)
    assert stream.on_message('image', image) is None  # waits for its camera_info
    frame = stream.on_message('info', info)
    assert isinstance(frame, StreamFrame)
    assert frame.stamp_ns == stamp_ns and stamp_to_ns(frame.header.stamp) == stamp_ns
    assert frame.header is image.header
    assert frame.frame.camera_id == 'camera' and frame.frame.image.shape == (
        SCENE['height'], SCENE['width'], 3)
    np.testing.assert_allclose(frame.frame.K, scene.K)
    assert frame.frame.depth is None and stream.sync_drop is None


def test_bad_sets_are_dropped_on_arrival_with_their_reason(scene):
    stream = CameraStream.from_parameters('/camera', oracle_parameters())
    image, info = scene_messages(scene, 0)
    image.encoding = '8UC3'
    stream.on_message('info', info)
    with pytest.raises(InputError) as error:
        stream.on_message('image', image)
    assert error.value.reason == 'encoding'
    image, info = scene_messages(scene, 1)
    info.width = SCENE['width'] // 2  # CameraInfo of another resolution
    stream.on_message('info', info)
    with pytest.raises(CalibrationError) as error:
        stream.on_message('image', image)
    assert error.value.reason == 'calibration_size'


def test_synchronizer_drops_are_reported_for_the_call_that_caused_them(scene):
    stream = CameraStream.from_parameters('/camera', oracle_parameters())
    assert feed(stream, scene, 0) is not None
    image, _ = scene_messages(scene, 0)
    assert stream.on_message('image', image) is None
    assert stream.sync_drop[0] == 'stamp_duplicate'
    assert stream.synchronizer.dropped == {'stamp_duplicate': 1}
    assert feed(stream, scene, 1) is not None and stream.sync_drop is None


# -- processing and outputs ---------------------------------------------------------------
def test_processing_needs_an_attached_pipeline(scene):
    stream = CameraStream.from_parameters('/camera', oracle_parameters())
    with pytest.raises(NoPipelineError, match='no pipeline'):
        stream.process(feed(stream, scene, 0))


def test_frames_become_messages_stamped_with_their_source_image(scene):
    if (reason := overlay_missing()) is not None:  # TrackedObjectArray is ours
        pytest.skip(reason)
    from pointmap_ros.ros.outputs import output_types
    stream = oracle_stream(oracle_parameters())
    assert stream.process(feed(stream, scene, 0)) is None  # opens the window
    for index in (1, 2, 3):
        frame = feed(stream, scene, index)
        result = stream.process(frame)
        assert result is not None and result.stamp == pytest.approx(frame.stamp_ns * 1e-9)
        messages, transforms = stream.outputs(result, frame.header)
        assert list(messages) == list(output_types())
        for key, message in messages.items():
            headers = ([marker.header for marker in message.markers] if key == 'markers'
                       else [message.header])
            assert all(stamp_to_ns(header.stamp) == frame.stamp_ns for header in headers), key
        assert messages['points'].header.frame_id == 'camera_optical_frame'
        assert messages['objects'].header.frame_id == 'world'
        children = [transform.child_frame_id for transform in transforms]
        assert children[0] == 'camera_optical_frame_estimated'
        assert children[1:] == [f'object_{obj.track_id}' for obj in result.objects]
        # The oracle serves exact maps: the published camera-frame depth is the scene's.
        rendered = scene.render(index)
        valid = result.valid & (rendered.depth > 0)
        np.testing.assert_allclose(result.points_cam[valid][:, 2], rendered.depth[valid],
                                   rtol=1e-4, atol=1e-4)
    assert result.objects, 'the demo scene has moving objects by frame 3'


def test_new_output_options_apply_to_the_next_frame(scene):
    if (reason := overlay_missing()) is not None:
        pytest.skip(reason)
    values = oracle_parameters()
    stream = oracle_stream(values)
    stream.process(feed(stream, scene, 0))
    frame = feed(stream, scene, 1)
    result = stream.process(frame)
    stream.output_options = OutputOptions.from_parameters(
        {**values, 'points_frame': 'world', 'publish_camera_tf': False,
         'publish_object_tf': False})
    messages, transforms = stream.outputs(result, frame.header)
    assert messages['points'].header.frame_id == 'world' and transforms == []
