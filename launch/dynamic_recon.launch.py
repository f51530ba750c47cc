"""Launch the DPM 4D reconstruction node, optionally with RViz and the bundled demo stream.

    ros2 launch pointmap_ros dynamic_recon.launch.py                      # /camera/image_raw
    ros2 launch pointmap_ros dynamic_recon.launch.py demo:=true           # synthetic scene
    ros2 launch pointmap_ros dynamic_recon.launch.py cameras:="['/front','/rear']" rviz:=false
    ros2 launch pointmap_ros dynamic_recon.launch.py use_sim_time:=true   # + ros2 bag play --clock

Node parameters come from ``params_file`` (default config/dynamic_recon.yaml); the few
arguments below override single entries (``world_frame_convention`` only when given).
``ros2 launch pointmap_ros dynamic_recon.launch.py --show-args`` lists them with their
descriptions. See docs/ros_interface.md.

``demo:=true`` also starts ``synthetic_camera_node``. It plays only once the reconstruction
node says it is ready (latched ``/dynamic_recon_node/ready``: engine loaded, subscribed) and
its own publishers are matched, so no frame is lost while the model loads; it loops the scene
and stamps frames with its ROS clock (simulated time under ``use_sim_time``). With
``backend:=oracle`` it plays the scene once instead, stamped ``t / fps``: the oracle serves
the ground truth of the frame its stamp names, and only the scene's frames exist.
``demo_odometry:=true`` makes the camera publish the drifting odometry a robot has
(``odom -> camera_optical_frame``; the ground truth then places ``odom`` in ``world``) and
the node use it (``odom_frame: odom``, the odometry prior); ``demo_depth:=true`` adds
``/camera/depth``, a noisy RGB-D sensor's with ``demo_depth_noise`` above 0, and the node
uses it (``use_depth: true``, the depth prior).
"""

import os
from typing import List

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

PACKAGE = 'pointmap_ros'
NODE_NAME = 'dynamic_recon_node'


def _nodes(context):
    """The node and the demo camera, built once the arguments are known (the camera's stamps
    and looping depend on the backend)."""
    use_sim_time = ParameterValue(LaunchConfiguration('use_sim_time'), value_type=bool)
    # --log-level is a ROS argument: ros_arguments puts it after --ros-args for us.
    log_level = ['--log-level', LaunchConfiguration('log_level')]
    overrides = {
        'cameras': ParameterValue(LaunchConfiguration('cameras'), value_type=List[str]),
        'backend': LaunchConfiguration('backend'),
        'model': LaunchConfiguration('model'),
        'cross_time_source': LaunchConfiguration('cross_time_source'),
        'engine_cache_dir': LaunchConfiguration('engine_cache_dir'),
        'use_sim_time': use_sim_time}
    overrides.update(_demo_sensor_overrides(context))
    convention = LaunchConfiguration('world_frame_convention').perform(context)
    if convention:  # '' keeps the params_file value
        overrides['world_frame_convention'] = convention
    # No emulate_tty: logs redirected to files or CI stay free of ANSI colour codes.
    recon = Node(
        package=PACKAGE, executable='dynamic_recon_node', name=NODE_NAME, output='screen',
        ros_arguments=log_level, parameters=[LaunchConfiguration('params_file'), overrides])

    oracle = LaunchConfiguration('backend').perform(context) == 'oracle'
    camera_params = {
        'namespace': '/camera', 'use_sim_time': use_sim_time,
        'wait_for_ready': f'/{NODE_NAME}/ready', 'wait_for_subscribers': True,
        'start_delay_s': 0.5, 'loop': not oracle,
        'stamp_source': 'scene' if oracle else 'clock',
        'publish_odometry': ParameterValue(LaunchConfiguration('demo_odometry'), value_type=bool),
        'publish_depth': ParameterValue(LaunchConfiguration('demo_depth'), value_type=bool),
        'depth_noise': ParameterValue(LaunchConfiguration('demo_depth_noise'), value_type=float)}
    if convention:
        camera_params['world_frame_convention'] = convention
    camera = Node(
        package=PACKAGE, executable='synthetic_camera_node', name='synthetic_camera_node',
        output='screen', ros_arguments=log_level, parameters=[camera_params],
        condition=IfCondition(LaunchConfiguration('demo')))
    return [recon, camera]


def _demo_sensor_overrides(context) -> dict:
    """Node parameters for the demo camera's simulated sensors: with ``demo:=true`` the
    sensors switched on are meant to be used, so the node reads them as priors."""
    def chosen(name):
        return context.launch_configurations.get(name) == 'true'
    if not chosen('demo'):
        return {}
    return {**({'odom_frame': 'odom'} if chosen('demo_odometry') else {}),
            **({'use_depth': True} if chosen('demo_depth') else {})}


def _demo_sensor_arguments() -> list:
    """The demo camera's simulated robot sensors (synthetic_camera_node parameters)."""
    return [
        DeclareLaunchArgument(
            'demo_odometry', default_value='false', choices=['true', 'false'],
            description='demo: the camera also publishes odometry with drift on /tf (odom -> '
                        'camera_optical_frame; its ground truth becomes world -> odom), and '
                        'the node uses it (odom_frame: odom).'),
        DeclareLaunchArgument(
            'demo_depth', default_value='false', choices=['true', 'false'],
            description='demo: the camera also publishes /camera/depth (32FC1 metres), and '
                        'the node uses it (use_depth: true).'),
        DeclareLaunchArgument(
            'demo_depth_noise', default_value='0.0',
            description='demo: relative noise of the simulated depth sensor, which then also '
                        'has holes; 0 = exact depth.'),
    ]


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    args = [
        DeclareLaunchArgument(
            'cameras', default_value="['/camera']",
            description="Camera namespaces as a YAML list; each provides <ns>/image_raw and "
                        "<ns>/camera_info (topic names: see params_file)."),
        DeclareLaunchArgument(
            'params_file', default_value=os.path.join(share, 'config', 'dynamic_recon.yaml'),
            description='YAML file with the node parameters (/**: ros__parameters).'),
        DeclareLaunchArgument(
            'backend', default_value='auto',
            choices=['auto', 'torch', 'onnxruntime', 'tensorrt', 'oracle'],
            description='Inference backend: auto | torch | onnxruntime | tensorrt | oracle '
                        '(oracle = exact ground truth of the demo scene, demo only).'),
        DeclareLaunchArgument(
            'model', default_value='',
            description="Checkpoint (.safetensors); '' = the shipped dpm_small model."),
        DeclareLaunchArgument(
            'cross_time_source', default_value='auto',
            choices=['auto', 'network', 'correspondence', 'fused'],
            description='Cross-time maps: network | correspondence | fused | auto (auto = '
                        'optical-flow correspondences for DUSt3R/MonST3R checkpoints).'),
        DeclareLaunchArgument(
            'engine_cache_dir', default_value='',
            description="Persistent folder for built engines; '' = ~/.cache/pointmap_ros."),
        DeclareLaunchArgument(
            'world_frame_convention', default_value='', choices=['', 'rep103', 'optical'],
            description="Axes of the world frame: rep103 (x forward, y left, z up) or optical "
                        "(x right, y down, z forward); '' = the params_file value (rep103)."),
        DeclareLaunchArgument(
            'rviz', default_value='true', choices=['true', 'false'],
            description='Start RViz with rviz_config (default config/dynamic_recon.rviz).'),
        DeclareLaunchArgument(
            'rviz_config', default_value=os.path.join(share, 'config', 'dynamic_recon.rviz'),
            description='RViz configuration file.'),
        DeclareLaunchArgument(
            'use_sim_time', default_value='false', choices=['true', 'false'],
            description='Use /clock (set true when playing a bag with `ros2 bag play --clock`).'),
        DeclareLaunchArgument(
            'demo', default_value='false', choices=['true', 'false'],
            description='Also start synthetic_camera_node publishing the bundled demo scene '
                        'on /camera (image_raw, camera_info, ground-truth /tf); it waits for '
                        'the node to be ready and loops.'),
        *_demo_sensor_arguments(),
        DeclareLaunchArgument(
            'log_level', default_value='info',
            choices=['debug', 'info', 'warn', 'error', 'fatal'],
            description='Log level of the nodes.'),
    ]
    use_sim_time = ParameterValue(LaunchConfiguration('use_sim_time'), value_type=bool)
    rviz = Node(
        package='rviz2', executable='rviz2', name='rviz2', output='screen',
        arguments=['-d', LaunchConfiguration('rviz_config')],
        parameters=[{'use_sim_time': use_sim_time}],
        condition=IfCondition(LaunchConfiguration('rviz')))

    return LaunchDescription(args + [OpaqueFunction(function=_nodes), rviz])
