"""Who may import rclpy (docs/architecture.md, "Who imports rclpy"):

- only ``pointmap_ros/ros/`` and the two tools that run ROS, ``tools/demo.py`` and
  ``tools/replay.py`` (plus the generated ``pointmap_ros.msg``);
- inside ``ros/``, not the per-camera core the node and the replay tool share
  (``camera_stream`` and what it uses), which must run without rclpy.

A child interpreter with ``sys.modules['rclpy'] = None`` (any ``import rclpy`` raises
ImportError) imports every module that must not need it.
"""

import json
import pkgutil
import subprocess
import sys

from helpers import REPO_ROOT

import pointmap_ros

# Modules allowed to import rclpy (prefix match on the dotted name).
ROS_ONLY = ('pointmap_ros.ros', 'pointmap_ros.msg', 'pointmap_ros.tools.demo',
            'pointmap_ros.tools.replay')
# demo_render is the matplotlib half of pointmap-demo; it must stay ROS-free too. The
# CameraStream core is a plain object under the node, like tf2's Buffer under its listener.
ROS_FREE_EXCEPTIONS = ('pointmap_ros.tools.demo_render', 'pointmap_ros.ros.camera_stream',
                       'pointmap_ros.ros.outputs', 'pointmap_ros.ros.conversions',
                       'pointmap_ros.ros.sync', 'pointmap_ros.ros.markers',
                       'pointmap_ros.ros.tf_buffer')

_CHILD = '''
import importlib, json, sys, traceback
sys.modules['rclpy'] = None  # import rclpy -> ImportError
failed = {}
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except Exception:
        failed[name] = traceback.format_exc(limit=-3)
print(json.dumps(failed))
'''


def ros_free_modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(pointmap_ros.__path__, 'pointmap_ros.')]
    return sorted(n for n in names if n in ROS_FREE_EXCEPTIONS or not any(
        n == p or n.startswith(p + '.') for p in ROS_ONLY))


def test_core_modules_import_without_rclpy():
    modules = ros_free_modules()
    assert 'pointmap_ros.pipeline.pipeline' in modules and 'pointmap_ros.ros.node' not in modules
    assert 'pointmap_ros.ros.camera_stream' in modules
    proc = subprocess.run([sys.executable, '-c', _CHILD, json.dumps(modules)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    failed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not failed, '\n'.join(f'{name}:\n{tb}' for name, tb in failed.items())


def test_the_block_really_hides_rclpy():
    """The check above would pass vacuously if blocking rclpy did not work."""
    proc = subprocess.run([sys.executable, '-c', _CHILD, '["pointmap_ros.ros.node"]'],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    failed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "No module named 'rclpy" in failed['pointmap_ros.ros.node']


def test_the_architecture_doc_states_the_rule_this_test_enforces():
    doc = (REPO_ROOT / 'docs' / 'architecture.md').read_text()
    rule = doc.split('**Who imports rclpy.**', 1)[1].split('\n\n', 1)[0]
    named = {'pointmap_ros.ros': '`pointmap_ros/ros/`',
             'pointmap_ros.tools.demo': '`pointmap_ros/tools/demo.py`',
             'pointmap_ros.tools.replay': '`pointmap_ros/tools/replay.py`'}
    for module in ROS_ONLY:
        if module != 'pointmap_ros.msg':  # generated, not a source file
            assert module in named, f'add {module} to this test and to the doc'
            assert named[module] in ' '.join(rule.split()), module
    assert '`ros/camera_stream.py`' in rule
