"""docs/ros_interface.md documents every parameter, launch argument, output, message field
and drop reason the code has (so the reference cannot silently fall behind)."""

import ast
import re
from pathlib import Path

from pointmap_ros.ros import params as P

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / 'docs' / 'ros_interface.md').read_text()


def test_every_parameter_is_in_the_table_with_its_default():
    # Parameter rows: | `name` | type | default | range | yes/no | description |
    rows = dict(re.findall(r'^\| `([a-z_]+)` \| [^|]+ \| ([^|]+) \| [^|]* \| (?:yes|no) \|',
                           DOC, flags=re.M))
    for spec in P.PARAMS:
        value = P.ros_value(spec.default)
        shown = (f"`'{value}'`" if isinstance(value, str) else
                 f'`{str(value).lower()}`' if isinstance(value, bool) else f'`{value}`')
        expected = 'from `PipelineConfig`' if spec.config_field else shown
        assert rows.get(spec.name) == expected, spec.name


def test_every_launch_argument_output_and_message_field_is_documented():
    tree = ast.parse((ROOT / 'launch' / 'dynamic_recon.launch.py').read_text())
    args = {n.args[0].value for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, 'id', '') == 'DeclareLaunchArgument'}
    for name in args:
        assert f'| `{name}` |' in DOC, name
    for key in ('points', 'scene_flow', 'dynamic_points', 'motion_mask', 'instance_ids',
                'objects', 'markers'):
        assert f'`~/{key}`' in DOC, key
    for msg in ('TrackedObject', 'TrackedObjectArray'):
        for line in (ROOT / 'msg' / f'{msg}.msg').read_text().splitlines():
            if line.strip() and not line.startswith('#'):
                assert f'| `{line.split()[1]}` |' in DOC, (msg, line)


def drop_reasons() -> set[str]:
    """Reason keys of every error that can drop a frame on its way through the node.

    The node counts the ``reason`` of any PointmapError from the synchronizer, the message
    conversions (ros/), the one K validation (geometry/camera.py), the pipeline (pipeline/,
    with runtime preprocessing wherever it lives) and the PnP pose fit (geometry/pose.py).
    """
    package = ROOT / 'pointmap_ros'
    frame_path_errors = {'InputError': 1, 'CalibrationError': 1, 'PoseError': 1}
    sources = [(path, {**frame_path_errors, '_drop': 0}) for path in package.glob('ros/*.py')]
    sources += [(path, frame_path_errors) for path in package.glob('pipeline/**/*.py')]
    sources += [(path, frame_path_errors) for path in package.glob('data/preprocess.py')]
    sources.append((package / 'geometry' / 'camera.py', {'CalibrationError': 1}))
    sources.append((package / 'geometry' / 'pose.py', {'PoseError': 1}))
    reasons = set()
    for path, calls in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, 'id', getattr(node.func, 'attr', ''))
            position = calls.get(name)
            if (position is not None and len(node.args) > position
                    and isinstance(node.args[position], ast.Constant)):
                reasons.add(node.args[position].value)  # the reason key argument
    return reasons


def test_every_drop_reason_on_the_frame_path_is_documented():
    reasons = drop_reasons()
    assert {'encoding', 'size', 'calibration_zero', 'stamp_duplicate', 'stamp_order',
            'no_points', 'pnp_failed', 'pnp_too_few_points'} <= reasons
    undocumented = sorted(reason for reason in reasons if f'`{reason}`' not in DOC)
    assert not undocumented, f'add to docs/ros_interface.md (Bad input): {undocumented}'
