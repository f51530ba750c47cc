"""pointmap_ros: Dynamic Point Map (DPM) inference and 4D scene understanding for ROS 2.

Importing the package is cheap (no torch, no rclpy). The ROS message classes generated from
``msg/`` live in ``pointmap_ros.msg`` in a colcon overlay; ``pkgutil.extend_path`` lets a
source checkout on ``sys.path`` find them there.
"""

import pkgutil

__path__ = pkgutil.extend_path(__path__, __name__)

__version__ = '0.1.0'
