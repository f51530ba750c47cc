"""launch/dynamic_recon.launch.py: installed where `ros2 launch` looks.

What the launch file itself starts and declares is checked in test/ros/test_launch_rviz.py.
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILE = ROOT / 'launch' / 'dynamic_recon.launch.py'
PACKAGE = 'pointmap_ros'


def test_overlay_installs_launch_config_and_executables():
    """The colcon overlay has the layout `ros2 launch` / `ros2 run` resolve through ament."""
    from ament_index_python.packages import get_package_prefix, get_package_share_directory

    share = Path(get_package_share_directory(PACKAGE))
    prefix = Path(get_package_prefix(PACKAGE))
    assert (share / 'launch' / LAUNCH_FILE.name).is_file()
    assert (share / 'package.xml').is_file()
    assert (share / 'config').is_dir()
    for name in ('dynamic_recon_node', 'synthetic_camera_node'):
        exe = prefix / 'lib' / PACKAGE / name
        assert exe.is_file() and os.access(exe, os.X_OK), f'{exe} missing or not executable'
