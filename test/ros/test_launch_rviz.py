"""launch/dynamic_recon.launch.py and config/dynamic_recon.rviz against what the node does.

Static checks (AST / YAML) run everywhere: the executables the launch file starts are exactly
our console entry points, every argument has a description and is used, and the RViz
displays subscribe to real output topics with a QoS the publishers serve. Building the
LaunchDescription needs ROS 2 `launch_ros` (no wheel exists): the vendored sources in
../shared/vendor/python are used when present (skipped with the reason where they are
missing; a failure in CI). test_launch_demo.py runs the launch file for real.
"""

import ast
import re
from pathlib import Path

from helpers import load_launch_module, ros_launch_available, skip_or_fail, use_vendored_ros
import pytest
import yaml

from pointmap_ros.ros import params as P

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILE = ROOT / 'launch' / 'dynamic_recon.launch.py'
RVIZ_FILE = ROOT / 'config' / 'dynamic_recon.rviz'
OUTPUTS = {'points', 'scene_flow', 'dynamic_points', 'motion_mask', 'instance_ids', 'objects',
           'markers'}
ARGUMENTS = {'cameras', 'params_file', 'backend', 'model', 'cross_time_source',
             'engine_cache_dir', 'rviz', 'rviz_config', 'use_sim_time', 'demo', 'log_level',
             'world_frame_convention', 'demo_odometry', 'demo_depth', 'demo_depth_noise'}


def launch_tree():
    return ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))


def calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, 'id', getattr(n.func, 'attr', None)) == name]


def kw(call, name):
    return next((k.value for k in call.keywords if k.arg == name), None)


def console_scripts() -> dict[str, str]:
    """name -> 'module:function' from setup.py's CONSOLE_SCRIPTS list."""
    tree = ast.parse((ROOT / 'setup.py').read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', '') == \
                'CONSOLE_SCRIPTS':
            return dict(entry.value.split('=', 1) for entry in node.value.elts)
    raise AssertionError('setup.py has no CONSOLE_SCRIPTS')


def test_launch_starts_exactly_our_console_entry_points():
    tree = launch_tree()
    assert 'generate_launch_description' in {
        n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    scripts = console_scripts()
    ours = {'dynamic_recon_node': 'pointmap_ros.ros.node:main',
            'synthetic_camera_node': 'pointmap_ros.ros.synthetic_camera:main'}
    started = {kw(c, 'executable').value for c in calls(tree, 'Node')
               if getattr(kw(c, 'package'), 'id', None) == 'PACKAGE'}  # PACKAGE = ours
    assert started == set(ours)
    for name, target in ours.items():
        assert scripts[name] == target
        # The launcher `ros2 run` / launch uses (installed by CMake) calls the same main().
        module, func = target.split(':')
        text = (ROOT / 'scripts' / 'nodes' / name).read_text()
        assert f'from {module} import {func}' in text, name


def test_every_launch_argument_is_described_and_used():
    tree = launch_tree()
    declared = {}
    for call in calls(tree, 'DeclareLaunchArgument'):
        description = kw(call, 'description')
        text = ''.join(v.value for v in ast.walk(description) if isinstance(v, ast.Constant))
        declared[call.args[0].value] = text
    assert set(declared) == ARGUMENTS
    assert all(len(text) > 15 for text in declared.values()), declared
    used = {c.args[0].value for c in calls(tree, 'LaunchConfiguration')}
    assert used == ARGUMENTS
    # The launch passes the YAML plus a handful of overrides, each a real parameter.
    overrides = {k.value for d in ast.walk(tree) if isinstance(d, ast.Dict) for k in d.keys
                 if isinstance(k, ast.Constant)}
    from pointmap_ros.ros.synthetic_camera import CAMERA_PARAMS
    camera_names = {spec.name for spec in CAMERA_PARAMS}
    assert overrides - {'use_sim_time'} <= set(P.PARAMS_BY_NAME) | camera_names


def test_rviz_displays_match_the_publishers():
    config = yaml.safe_load(RVIZ_FILE.read_text())
    manager = config['Visualization Manager']
    assert manager['Global Options']['Fixed Frame'] == P.defaults()['world_frame']
    topics = {}
    for display in manager['Displays']:
        topic = display.get('Topic')
        if isinstance(topic, dict):
            topics[topic['Value']] = topic
    ours = {t: q for t, q in topics.items() if t.startswith('/dynamic_recon_node/')}
    assert {'points', 'dynamic_points', 'markers', 'motion_mask'} <= {
        t.rsplit('/', 1)[1] for t in ours}
    for topic, qos in ours.items():
        assert topic.rsplit('/', 1)[1] in OUTPUTS
        # A Reliable subscriber only connects to a Reliable publisher.
        assert qos['Reliability Policy'] in ('Reliable', 'Best Effort')
        if qos['Reliability Policy'] == 'Reliable':
            assert P.defaults()['output_qos'] == 'reliable'
        assert qos['Durability Policy'] == 'Volatile'
    camera = topics['/camera/image_raw']
    assert camera['Reliability Policy'] == 'Best Effort'  # works with any camera driver
    assert any(d['Class'] == 'rviz_default_plugins/TF' for d in manager['Displays'])


def test_launch_defaults_point_at_shipped_files():
    text = LAUNCH_FILE.read_text()
    assert re.search(r"os\.path\.join\(share, 'config', 'dynamic_recon\.yaml'\)", text)
    assert re.search(r"os\.path\.join\(share, 'config', 'dynamic_recon\.rviz'\)", text)
    assert (ROOT / 'config' / 'dynamic_recon.yaml').is_file() and RVIZ_FILE.is_file()


def test_launch_description_loads_with_our_nodes():
    use_vendored_ros()
    if not ros_launch_available():
        skip_or_fail('ROS 2 `launch`/`launch_ros` are not importable (no PyPI wheels; the '
                     'vendored copy in ../shared/vendor/python and the overlay\'s '
                     'composition_interfaces are missing)')
    from launch import LaunchContext, LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch_ros.actions import Node

    description = load_launch_module(LAUNCH_FILE).generate_launch_description()
    assert isinstance(description, LaunchDescription)
    arguments = [e for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    assert {a.name for a in arguments} == ARGUMENTS
    nodes = [e for e in description.entities if isinstance(e, Node)]
    assert {n.node_executable for n in nodes} == {'rviz2'}
    # The node and the demo camera depend on the backend: built by an OpaqueFunction (what
    # they do at run time is test_launch_demo.py's subject).
    for backend in ('auto', 'oracle'):
        context = LaunchContext()
        for argument in arguments:
            context.launch_configurations[argument.name] = argument.default_value[0].text
        context.launch_configurations.update({'backend': backend, 'demo': 'true'})
        opaque = next(e for e in description.entities if isinstance(e, OpaqueFunction))
        built = [n.node_executable for n in opaque.execute(context)]
        assert sorted(built) == ['dynamic_recon_node', 'synthetic_camera_node']


@pytest.mark.parametrize('demo, odometry, depth, expected', [
    ('true', 'true', 'true', {'odom_frame': 'odom', 'use_depth': True}),
    ('true', 'false', 'true', {'use_depth': True}),
    ('true', 'false', 'false', {}),
    ('false', 'true', 'true', {}),  # no demo camera: the params_file decides
])
def test_demo_sensors_are_used_by_the_node(demo, odometry, depth, expected):
    use_vendored_ros()
    if not ros_launch_available():
        skip_or_fail('ROS 2 `launch`/`launch_ros` are not importable (see above)')
    from launch import LaunchContext
    context = LaunchContext()
    context.launch_configurations.update(
        {'demo': demo, 'demo_odometry': odometry, 'demo_depth': depth})
    module = load_launch_module(LAUNCH_FILE)
    assert module._demo_sensor_overrides(context) == expected
    for name, value in expected.items():  # real node parameters, valid values
        assert P.check_value(P.PARAMS_BY_NAME[name], value) is None
