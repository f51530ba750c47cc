"""Parameters: the YAML mirrors the table; invalid values are rejected with a reason at
start-up (the process exits non-zero) and at runtime (set_parameters answers the reason);
accepted dynamic changes take effect."""

import pytest
import yaml
from ros_harness import (PARAMS_FILE, Collector, ScenePublisher, oracle_args, overlay_missing,
                         rclpy, recon_process, spin_until, wait_for_node)

from pointmap_ros.ros import params as P

pytestmark = pytest.mark.ros  # needs rclpy and DDS

NODE = '/dynamic_recon_node'


def test_yaml_mirrors_the_parameter_table():
    text = PARAMS_FILE.read_text()
    assert text == P.render_yaml(), ('config/dynamic_recon.yaml is out of date: regenerate it '
                                     'with `python -m pointmap_ros.ros.params`')
    values = yaml.safe_load(text)['/**']['ros__parameters']
    assert list(values) == [spec.name for spec in P.PARAMS]
    for spec in P.PARAMS:
        default = P.ros_value(spec.default)
        assert values[spec.name] == default and type(values[spec.name]) is type(
            default), spec.name
    # [DYNAMIC] tags in the comments match the table.
    lines = text.splitlines()
    for spec in P.PARAMS:
        index = next(k for k, line in enumerate(lines) if line.strip().startswith(
            f'{spec.name}:'))
        comment = []
        for line in reversed(lines[:index]):
            if not line.strip().startswith('#'):
                break
            comment.append(line)
        assert ('[DYNAMIC]' in ' '.join(comment)) == spec.dynamic, spec.name


def test_table_is_complete_and_defaults_valid():
    assert P.validate(P.defaults()) is None
    for spec in P.PARAMS:
        assert spec.description and spec.name == spec.name.strip()
        if spec.range is not None:
            assert spec.range[0] <= spec.default <= spec.range[1], spec.name
        if spec.choices is not None:
            assert spec.default in spec.choices, spec.name
    # Pipeline defaults come from PipelineConfig, through the codecs.
    assert P.pipeline_config(P.defaults()) == P.PipelineConfig()
    config = P.pipeline_config({**P.defaults(), 'conf_keep_quantile': -1.0, 'fixed_scale': 0.0,
                                'input_size': [64, 96], 'pair_gaps': [1, 2]})
    assert config.conf_keep_quantile is None and config.fixed_scale is None
    assert config.input_size == (64, 96) and config.pair_gaps == (1, 2)


@pytest.mark.parametrize('override,reason', [
    ({'rigid_residual_rel': 0.0}, 'rigid_residual_rel'),            # PipelineConfig.validate
    ({'cameras': "['/a','/a']"}, 'duplicates'),                      # cross-field check
    ({'image_topic': '/abs/image'}, 'relative topic name'),
    ({'camera_frame': 'cam', 'cameras': "['/a','/b']"}, 'camera_frame must be empty'),
    ({'odom_camera_frame': 'cam', 'cameras': "['/a','/b']"},
     'odom_camera_frame must be empty'),
    ({'odom_frame': 'odom frame'}, 'odom_frame'),
])
def test_pure_validation_reasons(override, reason):
    values = {**P.defaults(), **{k: yaml.safe_load(v) if isinstance(v, str) and v[:1] == '['
                                 else v for k, v in override.items()}}
    assert reason in P.validate(values)


@pytest.mark.parametrize('override,reason', [
    ({'max_rate_hz': -1.0}, 'max_rate_hz'),
    ({'input_qos': 'fast'}, 'input_qos'),
    ({'rigid_residual_rel': 0.0}, 'rigid_residual_rel'),
    ({'cameras': "['/a','/a']"}, 'duplicates'),
    ({'cloud_stride': 0}, 'cloud_stride'),
])
def test_invalid_values_stop_the_node_at_startup(ros_node, override, reason):
    with recon_process(oracle_args(**override), name='bad-params') as proc:
        spin_until(ros_node, lambda: not proc.running, 60, 'node exits', proc)
        assert proc.proc.returncode != 0
        assert reason in proc.output(), proc.output()


def test_a_node_whose_parameters_are_rejected_shuts_down_cleanly():
    """rclpy destroys every node of a context at shutdown, also one whose constructor
    raised (the exception's traceback still holds it): its teardown must not read state the
    rejected start-up never made. It once did, and the process hung instead of exiting."""
    if (reason := overlay_missing()) is not None:
        pytest.skip(reason)
    from rclpy.parameter import Parameter

    from pointmap_ros.errors import ConfigError
    from pointmap_ros.ros.node import DynamicReconNode
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(ConfigError, match='rigid_residual_rel') as rejected:
            DynamicReconNode(context=context, parameter_overrides=[
                Parameter('backend', value='oracle'),
                Parameter('rigid_residual_rel', value=0.0)])
        assert rejected.traceback  # keeps the half-built node alive until the shutdown
    finally:
        context.try_shutdown()  # destroys it: raised AttributeError ('_worker') before


def test_missing_model_fails_with_the_path(ros_node, tmp_path):
    missing = tmp_path / 'nowhere.safetensors'
    args = oracle_args(backend='onnxruntime', model=str(missing))
    with recon_process(args, name='no-model') as proc:
        spin_until(ros_node, lambda: not proc.running, 60, 'node exits', proc)
        assert proc.proc.returncode != 0
        assert str(missing) in proc.output() and 'backend:=oracle' in proc.output()


@pytest.fixture(scope='module')
def live(ros_node):
    from rcl_interfaces.srv import GetParameters, SetParameters
    collector = Collector(ros_node)
    publisher = ScenePublisher(ros_node)
    setter = ros_node.create_client(SetParameters, f'{NODE}/set_parameters')
    getter = ros_node.create_client(GetParameters, f'{NODE}/get_parameters')
    with recon_process(oracle_args()) as proc:
        wait_for_node(ros_node, proc, publisher)
        spin_until(ros_node, lambda: setter.service_is_ready() and getter.service_is_ready(),
                   30, 'parameter services', proc)
        yield ros_node, setter, getter, collector, publisher, proc
        assert proc.stop() == 0, proc.output()


def call(node, client, request):
    future = client.call_async(request)
    spin_until(node, future.done, 15, 'service reply')
    return future.result()


def set_param(live, name, value):
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    node, setter = live[0], live[1]
    request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
    return call(node, setter, request).results[0]


def get_param(live, name):
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python
    reply = call(live[0], live[2], GetParameters.Request(names=[name]))
    return parameter_value_to_python(reply.values[0])


@pytest.mark.parametrize('name,value,reason', [
    ('max_rate_hz', -1.0, ''),                          # outside the declared range
    ('rigid_residual_rel', 0.0, 'rigid_residual_rel'),   # PipelineConfig.validate's reason
    ('points_frame', 'map', "one of ['camera', 'world']"),
    ('backend', 'torch', ''),                            # read-only after start-up
    ('cloud_stride', 1.5, ''),                           # wrong type
])
def test_runtime_rejections_give_a_reason(live, name, value, reason):
    before = get_param(live, name)
    result = set_param(live, name, value)
    assert not result.successful and result.reason
    assert reason in result.reason
    assert get_param(live, name) == before


def test_runtime_change_is_applied(live):
    node, _, _, collector, publisher, proc = live
    for name, value in (('max_rate_hz', 20.0), ('keyframe_max_age', 50),
                        ('points_frame', 'world')):
        result = set_param(live, name, value)
        assert result.successful, result.reason
        assert get_param(live, name) == value
    for t in range(2):
        stamp = publisher.publish_frame(t)
    spin_until(node, lambda: stamp in collector.stamps('points')
               and stamp in collector.stamps('scene_flow'), 30, 'output', proc)
    assert collector.msgs['points'][-1].header.frame_id == 'world'
    assert collector.msgs['scene_flow'][-1].header.frame_id == 'world'
    assert 'parameters changed' in proc.output()


def test_stream_end_is_logged_with_topics_qos_and_diagnostics_drops(live):
    """After test_runtime_change_is_applied's frames, the input stops: one line says so, with
    the topics, QoS and the drop counts /diagnostics publishes."""
    node, collector, proc = live[0], live[3], live[5]
    assert set_param(live, 'no_input_warn_s', 1.0).successful
    spin_until(node, lambda: 'Input stopped' in proc.output(), 15, 'stream-end log', proc)
    line = next(x for x in proc.output().splitlines() if 'Input stopped' in x)
    for part in ('/camera/image_raw', '/camera/camera_info', 'best_effort', 'usable input'):
        assert part in line, line
    drops = {k.split('dropped ', 1)[1]: int(v) for k, v in collector.diagnostics().items()
             if k.startswith('processing/dropped ') and k != 'processing/dropped total'
             and int(v)}
    assert f'dropped (as on /diagnostics): {drops}' in line, (drops, line)


def test_spec_defaults_are_immutable_and_declared_as_lists():
    # The frozen specs share no mutable default; rclpy and YAML get fresh lists.
    assert not [s.name for s in P.PARAMS if isinstance(s.default, (list, dict, set))]
    first, second = P.defaults(), P.defaults()
    assert first['cameras'] == ['/camera'] and first['cameras'] is not second['cameras']
    first['cameras'].append('/other')
    assert P.PARAMS_BY_NAME['cameras'].default == ('/camera',)
