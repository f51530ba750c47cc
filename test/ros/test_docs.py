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


def test_every_drop_reason_raised_by_the_ros_layer_is_documented():
    reasons = set()
    ros_calls = {'InputError': 1, 'CalibrationError': 1, '_drop': 0}
    # The CalibrationErrors of geometry/camera.py: the one K validation, which
    # conversions.camera_info_to_K calls.
    sources = [(path, ros_calls) for path in (ROOT / 'pointmap_ros' / 'ros').glob('*.py')]
    sources.append((ROOT / 'pointmap_ros' / 'geometry' / 'camera.py', {'CalibrationError': 1}))
    for path, calls in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, 'id', getattr(node.func, 'attr', ''))
            position = calls.get(name)
            if (position is not None and len(node.args) > position
                    and isinstance(node.args[position], ast.Constant)):
                reasons.add(node.args[position].value)  # the reason key argument
    assert {'encoding', 'size', 'calibration_zero', 'stamp_duplicate'} <= reasons
    for reason in reasons:
        assert f'`{reason}`' in DOC, reason
