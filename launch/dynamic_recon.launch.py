"""Launch the DPM 4D reconstruction node, optionally with RViz and the bundled demo stream.

    ros2 launch pointmap_ros dynamic_recon.launch.py                      # /camera/image_raw
    ros2 launch pointmap_ros dynamic_recon.launch.py demo:=true           # synthetic scene
    ros2 launch pointmap_ros dynamic_recon.launch.py cameras:="['/front','/rear']" rviz:=false
    ros2 launch pointmap_ros dynamic_recon.launch.py use_sim_time:=true   # + ros2 bag play --clock

Node parameters come from ``params_file`` (default config/dynamic_recon.yaml); the few
arguments below override single entries. ``ros2 launch pointmap_ros dynamic_recon.launch.py
--show-args`` lists them with their descriptions. See docs/ros_interface.md.
"""

import os
from typing import List

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

PACKAGE = 'pointmap_ros'


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
            description='Inference backend: auto | torch | onnxruntime | tensorrt | oracle '
                        '(oracle = exact ground truth of the demo scene, demo only).'),
        DeclareLaunchArgument(
            'model', default_value='',
            description="Checkpoint (.safetensors); '' = the shipped dpm_small model."),
        DeclareLaunchArgument(
            'cross_time_source', default_value='auto',
            description='Cross-time maps: network | correspondence | fused | auto (auto = '
                        'optical-flow correspondences for DUSt3R/MonST3R checkpoints).'),
        DeclareLaunchArgument(
            'engine_cache_dir', default_value='',
            description="Persistent folder for built engines; '' = ~/.cache/pointmap_ros."),
        DeclareLaunchArgument(
            'rviz', default_value='true',
            description='Start RViz with rviz_config (default config/dynamic_recon.rviz).'),
        DeclareLaunchArgument(
            'rviz_config', default_value=os.path.join(share, 'config', 'dynamic_recon.rviz'),
            description='RViz configuration file.'),
        DeclareLaunchArgument(
            'use_sim_time', default_value='false',
            description='Use /clock (set true when playing a bag with `ros2 bag play --clock`).'),
        DeclareLaunchArgument(
            'demo', default_value='false',
            description='Also start synthetic_camera_node publishing the bundled demo scene '
                        'on /camera (image_raw, camera_info, ground-truth /tf).'),
        DeclareLaunchArgument(
            'log_level', default_value='info', description='Log level of the nodes.'),
    ]
    use_sim_time = ParameterValue(LaunchConfiguration('use_sim_time'), value_type=bool)
    log_args = ['--ros-args', '--log-level', LaunchConfiguration('log_level')]

    recon = Node(
        package=PACKAGE, executable='dynamic_recon_node', name='dynamic_recon_node',
        output='screen', emulate_tty=True, arguments=log_args,
        parameters=[
            LaunchConfiguration('params_file'),
            {'cameras': ParameterValue(LaunchConfiguration('cameras'), value_type=List[str]),
             'backend': LaunchConfiguration('backend'),
             'model': LaunchConfiguration('model'),
             'cross_time_source': LaunchConfiguration('cross_time_source'),
             'engine_cache_dir': LaunchConfiguration('engine_cache_dir'),
             'use_sim_time': use_sim_time}])

    camera = Node(
        package=PACKAGE, executable='synthetic_camera_node', name='synthetic_camera_node',
        output='screen', arguments=log_args, condition=IfCondition(LaunchConfiguration('demo')),
        parameters=[{'namespace': '/camera', 'use_sim_time': use_sim_time}])

    rviz = Node(
        package='rviz2', executable='rviz2', name='rviz2', output='screen',
        arguments=['-d', LaunchConfiguration('rviz_config')],
        parameters=[{'use_sim_time': use_sim_time}],
        condition=IfCondition(LaunchConfiguration('rviz')))

    return LaunchDescription(args + [recon, camera, rviz])
