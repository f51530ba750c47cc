"""Every node's parameters: one table per node, declared in one loop, validated in one place.

:data:`PARAMS` is ``dynamic_recon_node``'s table, :data:`CAMERA_PARAMS` the
``synthetic_camera_node``'s; both are :class:`ParamSpec` lists declared by
:func:`declare_parameters`.

Each :class:`ParamSpec` gives name, default, description (with unit), numeric range or
choices, and whether it may change at runtime (``dynamic``; the others are ``read_only`` and
need a restart). Pipeline parameters name the :class:`~pointmap_ros.pipeline.PipelineConfig`
field they set; their defaults are read from that dataclass so there is a single source of
truth, and :func:`validate` runs ``PipelineConfig.validate()`` so the node, the replay tool
and the offline pipeline reject exactly the same values with the same reason.
``config/dynamic_recon.yaml`` mirrors this table (a test keeps them equal).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pointmap_ros.data.depth_sensor import DepthSensorModel
from pointmap_ros.data.odometry import OdometryModel
from pointmap_ros.errors import ConfigError
from pointmap_ros.frames import ODOM_FRAME
from pointmap_ros.pipeline import PipelineConfig
from pointmap_ros.pipeline.correspondence import CROSS_TIME_SOURCES, FLOW_PRESETS
from pointmap_ros.pipeline.scene_flow import FLOW_ALONG_RAY
from pointmap_ros.ros.qos import QOS_CHOICES

__all__ = ['ParamSpec', 'PARAMS', 'PARAMS_BY_NAME', 'CAMERA_PARAMS', 'CAMERA_PARAMS_BY_NAME',
           'ros_value', 'defaults',
           'check_value', 'validate', 'validate_camera', 'pipeline_config', 'declare_parameters',
           'engine_kwargs', 'render_yaml']

_BACKENDS = ('auto', 'torch', 'onnxruntime', 'tensorrt', 'oracle')
_TOPIC_RE = re.compile(r'^[~/]?[A-Za-z_][A-Za-z0-9_/]*$')
_FRAME_RE = re.compile(r'^[A-Za-z_][A-Za-z0-9_/]*$')


@dataclass(frozen=True)
class ParamSpec:
    """One parameter.

    Attributes:
        name: parameter name.
        default: default value; its Python type is the parameter type (pipeline parameters
            take theirs from PipelineConfig). Arrays are stored as tuples so the frozen spec
            shares no mutable default; :func:`ros_value` gives the list rclpy and YAML use.
        description: meaning and unit.
        range: ``(low, high)`` inclusive for numbers.
        choices: allowed values for strings.
        dynamic: may be changed at runtime (otherwise read-only after start-up).
        config_field: the PipelineConfig field this parameter sets, if any.
        codec: key of ``_CODECS`` converting parameter <-> config values, if needed.
    """

    name: str
    default: Any
    description: str
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    dynamic: bool = False
    config_field: str | None = None
    codec: str | None = None


_NODE_PARAMS = [
    # -- inputs --------------------------------------------------------------------------
    ParamSpec('cameras', ('/camera',),
              'Camera namespaces; each gets its own pipeline (engine shared).'),
    ParamSpec('image_topic', 'image_raw', 'Image topic relative to each camera namespace.'),
    ParamSpec('camera_info_topic', 'camera_info', 'CameraInfo topic relative to each namespace.'),
    ParamSpec('depth_topic', 'depth',
              'Depth topic relative to each namespace (16UC1 mm or 32FC1 m); used if use_depth.'),
    ParamSpec('use_camera_info', True,
              'Pair each image with a CameraInfo (K). False: intrinsics are estimated.'),
    ParamSpec('use_depth', False, 'Pair each image with a depth image (metric geometry: '
              'fused into the maps when depth_prior, else the metric scale only).'),
    ParamSpec('odom_frame', '', "Odometry frame (REP-105 'odom'): the camera's pose in it at "
              "each image stamp is read from TF and given to the pipeline as the odometry "
              "prior; '' = off."),
    ParamSpec('odom_camera_frame', '', "TF frame whose pose in odom_frame is looked up; '' = "
              "the image's header.frame_id, which must be the optical frame (REP-103: x "
              "right, y down, z forward). Single camera only."),
    ParamSpec('odom_timeout_s', 0.05, "Longest wait for an image's odometry TF, which "
              "usually arrives just after the image (s; on the inference thread, never the "
              "executor); then the frame goes on without odometry.", range=(0.0, 1.0)),
    ParamSpec('input_qos', 'sensor_data', 'Reliability of the input subscriptions.',
              choices=QOS_CHOICES),
    ParamSpec('input_queue_depth', 5, 'Keep-last depth of each input subscription (messages).',
              range=(1, 100)),
    ParamSpec('sync_slop_s', 0.02, 'Largest image/camera_info/depth stamp difference (s).',
              range=(0.0, 1.0)),
    ParamSpec('exact_sync', False, 'Require identical stamps (ignores sync_slop_s).'),
    ParamSpec('sync_queue_size', 5, 'Messages buffered per input while waiting for partners.',
              range=(1, 50)),
    ParamSpec('no_input_warn_s', 5.0, 'Warn (naming topics and QoS) after this long without '
              'usable input (s); 0 disables.', range=(0.0, 3600.0), dynamic=True),
    # -- scheduling ----------------------------------------------------------------------
    ParamSpec('max_rate_hz', 5.0, 'Most inferences started per second over all cameras (Hz); '
              '0 = unlimited. Newer frames replace waiting ones.', range=(0.0, 1000.0),
              dynamic=True),
    # -- outputs -------------------------------------------------------------------------
    ParamSpec('output_qos', 'reliable', 'Reliability of the output publishers.',
              choices=QOS_CHOICES),
    ParamSpec('output_queue_depth', 2, 'Keep-last depth of the output publishers (messages).',
              range=(1, 100)),
    ParamSpec('points_frame', 'camera', "Frame of ~/points, ~/scene_flow, ~/dynamic_points: "
              "'camera' (the image's optical frame_id) or 'world'.", choices=('camera', 'world'),
              dynamic=True),
    ParamSpec('cloud_stride', 1, 'Keep every n-th row and column in the clouds (1 = full '
              'resolution); clouds stay organized.', range=(1, 64), dynamic=True),
    ParamSpec('world_frame', 'world', 'Fixed frame of the trajectory, objects and world clouds.'),
    ParamSpec('world_frame_convention', 'rep103', "Axes of world_frame, origin at the first "
              "processed camera pose: 'rep103' (x forward, y left, z up; REP-103) or 'optical' "
              "(x right, y down, z forward, the camera's optical axes).",
              choices=('rep103', 'optical')),
    ParamSpec('camera_frame', '', "Child frame of the estimated camera pose; '' = "
              "'<image frame_id>_estimated' (never the driver's own frame)."),
    ParamSpec('object_frame_prefix', 'object_', 'TF child frame of object k is <prefix><k>.'),
    ParamSpec('publish_camera_tf', True, 'Broadcast world -> estimated camera.', dynamic=True),
    ParamSpec('publish_object_tf', True, 'Broadcast world -> <prefix><id> per tracked object.',
              dynamic=True),
    ParamSpec('diagnostics_period_s', 1.0, 'Period of /diagnostics (s).', range=(0.1, 60.0)),
    # -- engine (see docs/engines.md) ---------------------------------------------------
    ParamSpec('backend', 'auto', 'Inference backend.', choices=_BACKENDS),
    ParamSpec('model', '', "Checkpoint (.safetensors); '' = the shipped model "
              'pointmap_ros/assets/dpm_small.safetensors.'),
    ParamSpec('onnx_dir', '',
              "Folder of exported ONNX files (onnxruntime/tensorrt); '' = default."),
    ParamSpec('engine_path', '', "TensorRT plan file; '' = derived inside engine_cache_dir."),
    ParamSpec('engine_cache_dir', '', "Persistent engine cache; '' = ~/.cache/pointmap_ros."),
    ParamSpec('device', 'auto', "Device for torch/onnxruntime/tensorrt ('auto', 'cpu', 'cuda', "
              "'cuda:N')."),
    ParamSpec('precision', 'auto', 'Inference precision (auto: bf16 on a CPU with native bf16 '
              'when backend auto picks torch, else fp32).',
              choices=('auto', 'fp32', 'fp16', 'bf16')),
    # backend 'oracle' serves the exact ground truth of a generated scene; these must match
    # the synthetic camera's scene (frame = round(stamp * fps)).
    ParamSpec('oracle_scene', 'demo', "backend 'oracle': scene preset ('demo' or 'random').",
              choices=('demo', 'random')),
    ParamSpec('oracle_seed', 0, "backend 'oracle': scene seed.", range=(0, 2**31 - 1)),
    ParamSpec('oracle_height', 224, "backend 'oracle': scene image rows (px).", range=(8, 4096)),
    ParamSpec('oracle_width', 224, "backend 'oracle': scene image columns (px).", range=(8, 4096)),
    ParamSpec('oracle_frames', 30, "backend 'oracle': scene length (frames).", range=(5, 100000)),
    ParamSpec('oracle_fps', 10.0, "backend 'oracle': scene frame rate (Hz).", range=(0.1, 1000.0)),
]

def _int_tuple(values) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


# (spec default from the config value, config value from the parameter value), for fields
# whose Python type has no ROS parameter type: integer arrays (rclpy gives lists; the spec
# and PipelineConfig hold tuples) and None.
_CODECS = {
    'int_tuple': (_int_tuple, _int_tuple),
    'none_if_negative': (lambda v: -1.0 if v is None else float(v),
                         lambda v: None if v < 0 else float(v)),
    'none_if_zero': (lambda v: 0.0 if v is None else float(v),
                     lambda v: None if v == 0 else float(v)),
}


def _pipe(field_name, description, codec=None, **kw) -> ParamSpec:
    """Spec of a PipelineConfig field; its default is read from the dataclass."""
    default = getattr(PipelineConfig(), field_name)
    if codec is not None:
        default = _CODECS[codec][0](default)
    return ParamSpec(field_name, default, description, config_field=field_name, codec=codec,
                     **kw)


_PIPELINE_PARAMS = [
    _pipe('input_size', 'Model input [H, W] (px) when the engine accepts any size; fixed-shape '
          'engines (ONNX/TensorRT, oracle) impose theirs.', codec='int_tuple'),
    _pipe('window_size', 'Processed frames kept in the sliding window besides the keyframe.',
          range=(1, 64)),
    _pipe('pair_gaps', 'Pair each frame with the frames this many positions back (frames).',
          codec='int_tuple'),
    _pipe('keyframe_min_overlap', 'Switch keyframe when a smaller fraction of the current '
          'pixels falls inside it (0..1).', range=(0.0, 0.999), dynamic=True),
    _pipe('keyframe_max_age', 'Switch keyframe after this many frames (0 = never by age).',
          range=(0, 100000), dynamic=True),
    _pipe('flow_keyframe_max_age', 'With correspondences, also switch keyframe once it is this '
          'many frames and flow_keyframe_max_age_s old (optical flow across long gaps '
          'degrades; 0 = no frame limit).', range=(0, 100000), dynamic=True),
    _pipe('flow_keyframe_max_age_s', 'With correspondences, also switch keyframe once it is this '
          'many seconds and flow_keyframe_max_age frames old (0 = no time limit; both 0 = '
          'never).', range=(0.0, 3600.0), dynamic=True),
    _pipe('flow_motion_baseline_s', 'With correspondences on precise maps, a frame whose '
          'keyframe is younger than this (s) is also paired with the newest window frame at '
          'least this much older (0 = never).', range=(0.0, 60.0), dynamic=True),
    _pipe('conf_threshold', 'Points with lower model confidence are rejected (NaN in clouds).',
          range=(0.0, 1e6), dynamic=True),
    _pipe('conf_keep_quantile', 'Also reject this lowest fraction of confidences per frame '
          '(0..1); -1 disables.', codec='none_if_negative', range=(-1.0, 0.999), dynamic=True),
    _pipe('motion_speed_rel', 'Moving = faster than this fraction of the scene depth per '
          'second (1/s)...', range=(0.0, 10.0), dynamic=True),
    _pipe('motion_min_rel', '...and displaced more than this fraction of the scene depth...',
          range=(0.0, 1.0), dynamic=True),
    _pipe('motion_noise_mult', '...and more than this multiple of the median flow.',
          range=(0.0, 100.0), dynamic=True),
    _pipe('min_region_frac', 'Moving regions and holes in them smaller than this fraction '
          'of the image area vanish (network depths).', range=(0.0, 0.999), dynamic=True),
    _pipe('min_region_frac_measured', 'The same where a depth camera measured the depths.',
          range=(0.0, 0.999), dynamic=True),
    _pipe('min_instance_frac', 'Smallest moving object, as a fraction of the image area.',
          range=(0.0, 0.999), dynamic=True),
    _pipe('instance_size_hysteresis', 'A tracked object keeps its track down to this fraction '
          'of min_instance_frac (a receding object); new objects need all of it...',
          range=(0.001, 1.0), dynamic=True),
    _pipe('small_birth_frac', '...or this fraction of it when they move clearly, as one rigid '
          'whole, and are no fragment of a tracked object (1 = never).',
          range=(0.001, 1.0), dynamic=True),
    _pipe('instance_split_bodies', 'A moving region that moves as up to this many rigid '
          'bodies (objects touching in the image) is split into them, one object each '
          '(1 = never).', range=(1, 8), dynamic=True),
    _pipe('rigid_residual_rel', 'Objects whose rigid-fit residual exceeds this fraction of '
          'their size are flagged non-rigid (must be > 0).', range=(0.0, 10.0), dynamic=True),
    _pipe('flow_per_second', 'Scene flow and velocities per second (else per frame gap).',
          dynamic=True),
    _pipe('fixed_scale', 'Metres per model unit when known a priori; 0 = unknown (outputs '
          'are up to scale unless depth is used).', codec='none_if_zero', range=(0.0, 1e6)),
    _pipe('seed', 'Seed of the random choices (RANSAC); results are deterministic.',
          range=(0, 2**31 - 1)),
    _pipe('cross_time_source', "Where P_i(t_j), P_j(t_i) come from: 'network' (the model's "
          "cross-time heads), 'correspondence' (dense optical flow + same-time maps), "
          "'fused' (correspondences where observed, network elsewhere) or 'auto' "
          '(correspondences when the checkpoint\'s cross-time heads are untrained copies, '
          'e.g. a converted DUSt3R/MonST3R file; fused when they are trained but their '
          'held-out flow was never recorded below zero flow, pointmap-eval --record; else '
          'network). Logged and in /diagnostics.',
          choices=CROSS_TIME_SOURCES),
    _pipe('flow_width', 'Optical flow runs on the model crop at this many pixels across '
          '(at most the camera width): flow accuracy against its cost (px).',
          range=(16, 4096)),
    _pipe('flow_preset', "Optical flow (OpenCV DIS) settings: 'fast', 'balanced', "
          "'accurate' or 'dense' ('accurate' with patches every 3 px instead of 4: moving "
          'objects measured more accurately for about a quarter more flow time).',
          choices=FLOW_PRESETS),
    _pipe('flow_along_ray', "Moving pixels' scene flow along the viewing ray: 'trusted' "
          'publishes it only on pairs whose depths a depth camera measured or the camera '
          "test trusted, elsewhere only the flow across the ray (a network's depth of a "
          "moving object errs by more than it moves); 'always' publishes it as measured.",
          choices=FLOW_ALONG_RAY, dynamic=True),
    _pipe('flow_warm_start', "Start each pair's optical flow from the flows measured for the "
          'previous frame (kept per pixel where they match better than no motion): keyframe '
          'pairs several frames apart then follow moving objects that the flow alone loses.'),
    _pipe('flow_min_px', 'With correspondences, a pixel moves when its image motion misses '
          'the camera-induced one by more than this (flow px)...', range=(0.0, 100.0),
          dynamic=True),
    _pipe('flow_noise_mult', '...and by more than this multiple of the median miss.',
          range=(0.0, 100.0), dynamic=True),
    _pipe('flow_depth_min_rel', '...or, where the maps are trusted, its depth changed by '
          'more than this fraction (motion along the viewing ray).', range=(0.0, 10.0),
          dynamic=True),
    _pipe('flow_depth_min_rel_precise', 'The same where the maps are precise (their static '
          'pixels\' camera-induced flow misses the optical flow by no more than its own '
          'noise).', range=(0.0, 10.0), dynamic=True),
    _pipe('flow_free_space', 'Where the maps are precise, pixels the optical flow cannot judge '
          '(flat texture, occlusions, the image border) move when the reference camera saw '
          'past the place their point would have held standing still (free-space test).',
          dynamic=True),
    _pipe('flow_border_px', 'The motion test does not judge pixels this close to the image '
          'border (optical flow there matches patches that leave the image) (flow px).',
          range=(0, 64), dynamic=True),
    _pipe('flow_min_gradient', 'Windows (7x7) of the optical flow\'s image whose RMS intensity '
          'gradient is below this are flat: their flow is a guess and the motion test skips '
          'them (grey levels per flow px).', range=(0.0, 255.0), dynamic=True),
    _pipe('flow_halo_px', 'Moving pixels within this distance of the mask border that lie '
          'behind a nearer moving pixel are dropped (background dragged along by the flow; '
          '0 = keep them) (flow px).', range=(0, 64), dynamic=True),
    _pipe('flow_colour_fill_px', 'Pixels without a confident point join the motion mask '
          'within this distance of it when their colour is nearer the moving pixels\' around '
          'them than the judged static ones\' (0 = never) (flow px).', range=(0, 64),
          dynamic=True),
    _pipe('depth_prior', 'With use_depth: fuse the depth image into the point maps where it '
          'is reliable (metric points and scene flow; the network fills holes, scaled to the '
          'depth); false = depth sets only the metric scale.', dynamic=True),
    _pipe('depth_min_m', 'Depth nearer than this is not trusted (sensor range, m); must be '
          'below depth_max_m.', range=(0.001, 1000.0), dynamic=True),
    _pipe('depth_max_m', 'Depth farther than this is not trusted (sensor range, m).',
          range=(0.01, 10000.0), dynamic=True),
    _pipe('depth_edge_rel', 'Depth pixels whose inverse depth bends by more than this '
          'fraction along a row or column are flying pixels at a depth edge and not trusted '
          '(planes at any slant pass).', range=(0.001, 10.0), dynamic=True),
    _pipe('odometry_prior', 'With odom_frame: fuse the odometry pose (TF) into the camera '
          'pose and take the metric scale from it; false ignores odometry.', dynamic=True),
    _pipe('odometry_weight', 'Weight of odometry in the pose while odometry and maps agree '
          '(0 maps only, 1 odometry only).', range=(0.0, 1.0), dynamic=True),
    _pipe('odometry_max_disagreement_deg', 'Odometry and maps disagree beyond this rotation '
          'difference (deg); the one that better explains the static pixels is then used.',
          range=(0.01, 180.0), dynamic=True),
    _pipe('odometry_max_disagreement_rel', 'Odometry and maps disagree beyond this translation '
          'difference (fraction of the scene depth).', range=(0.0001, 10.0), dynamic=True),
    _pipe('odometry_min_parallax_px', 'Pairs whose translation moves static pixels by less '
          'than this (median, model px) do not measure the metric scale.',
          range=(0.01, 100.0), dynamic=True),
]

PARAMS: list[ParamSpec] = _NODE_PARAMS + _PIPELINE_PARAMS
PARAMS_BY_NAME = {p.name: p for p in PARAMS}


# The synthetic camera's simulated sensors take their defaults from the error models.
_DEPTH_SENSOR = DepthSensorModel()
_ODOMETRY = OdometryModel()

# The synthetic camera node's own table (same ParamSpec rules; all read-only, read once).
CAMERA_PARAMS: list[ParamSpec] = [
    ParamSpec('namespace', '/camera', 'Camera namespace the topics are published under.'),
    ParamSpec('image_topic', 'image_raw', 'Image topic relative to namespace.'),
    ParamSpec('camera_info_topic', 'camera_info', 'CameraInfo topic relative to namespace.'),
    ParamSpec('depth_topic', 'depth', 'Depth topic relative to namespace (depth_encoding).'),
    ParamSpec('publish_depth', False, 'Also publish the depth image.'),
    ParamSpec('publish_tf', True, 'Publish ground truth on /tf: world_frame -> frame_id (-> '
              'odom_frame instead with publish_odometry) and world_frame -> gt_object_<k>.'),
    ParamSpec('publish_clock', False,
              'Publish each frame stamp on /clock (drives use_sim_time graphs).'),
    ParamSpec('frame_id', 'camera_optical_frame',
              'header.frame_id of the images (optical frame).'),
    ParamSpec('world_frame', 'world', 'Parent frame of the ground-truth TF.'),
    ParamSpec('world_frame_convention', 'rep103', "Axes of world_frame, origin at the first "
              "camera pose (as dynamic_recon_node's parameter of that name, so both agree): "
              "'rep103' (x forward, y left, z up) or 'optical'.",
              choices=('rep103', 'optical')),
    ParamSpec('scene', 'demo', 'Scene preset.', choices=('demo', 'random')),
    ParamSpec('seed', 0, 'Scene seed.', range=(0, 2**31 - 1)),
    ParamSpec('height', 224, 'Image rows (px).', range=(8, 4096)),
    ParamSpec('width', 224, 'Image columns (px).', range=(8, 4096)),
    ParamSpec('frames', 30, 'Scene length (frames).', range=(5, 100000)),
    ParamSpec('fps', 10.0, 'Scene frame rate (Hz); frame t is at t / fps in the scene.',
              range=(0.1, 1000.0)),
    ParamSpec('rate_hz', 0.0, 'Publication rate (Hz); 0 = fps (real time).',
              range=(0.0, 1000.0)),
    ParamSpec('encoding', 'rgb8', 'Image encoding.', choices=('rgb8', 'bgr8')),
    ParamSpec('stamp_source', 'clock', "Header stamps: 'clock' = this node's ROS clock at "
              "publication (sim time under use_sim_time); 'scene' = t / fps (backend oracle).",
              choices=('clock', 'scene')),
    ParamSpec('loop', False, 'Replay the scene forever (stamps keep increasing).'),
    ParamSpec('wait_for_ready', '', "Latched std_msgs/Bool topic to wait for true on before "
              "playing (e.g. /dynamic_recon_node/ready); '' = do not wait."),
    ParamSpec('wait_for_subscribers', False, 'Play only once every publisher of the camera '
              'has a matched subscription.'),
    ParamSpec('start_delay_s', 1.0, 'Extra wait after the conditions above hold (s).',
              range=(0.0, 3600.0)),
    ParamSpec('qos', 'reliable', 'Reliability of the image/camera_info/depth publishers.',
              choices=QOS_CHOICES),
    ParamSpec('shutdown_when_done', False, 'Exit after the last frame (ignored with loop).'),
    # -- simulated robot sensors (data/sensor_rig.py) -------------------------------------
    ParamSpec('depth_encoding', '32FC1', "Depth image encoding: '32FC1' metres (NaN = no "
              "data) or '16UC1' millimetres (0 = no data, REP-118).",
              choices=('32FC1', '16UC1')),
    ParamSpec('depth_noise', 0.0, 'Depth noise of the simulated RGB-D sensor (standard '
              'deviation relative to the depth); 0 = the exact rendered depth (no noise, '
              'holes or range limit); > 0 = a sensor with the depth_* error values below.',
              range=(0.0, 1.0)),
    ParamSpec('depth_dropout', _DEPTH_SENSOR.dropout, 'With depth_noise > 0: fraction of all '
              'pixels without data (random).', range=(0.0, 1.0)),
    ParamSpec('depth_edge_hole_prob', _DEPTH_SENSOR.edge_hole_prob, 'With depth_noise > 0: '
              'probability that a pixel at a depth edge has no data.', range=(0.0, 1.0)),
    ParamSpec('depth_flying_prob', _DEPTH_SENSOR.flying_prob, 'With depth_noise > 0: '
              'probability that another depth-edge pixel reads between the two surfaces.',
              range=(0.0, 1.0)),
    ParamSpec('depth_min_m', _DEPTH_SENSOR.min_m, 'With depth_noise > 0: nearest depth the '
              'sensor measures (m); must be below depth_max_m.', range=(0.0, 1000.0)),
    ParamSpec('depth_max_m', _DEPTH_SENSOR.max_m, 'With depth_noise > 0: farthest depth the '
              'sensor measures (m).', range=(0.01, 10000.0)),
    ParamSpec('publish_odometry', False, 'Publish odometry on /tf: odom_frame -> frame_id, the '
              'true camera pose with drift and jitter (odometry_*), as a robot reports it.'),
    ParamSpec('odom_frame', ODOM_FRAME, 'Fixed frame of the odometry (REP-105), where the first '
              'frame is a camera 1 m above the origin looking along x.'),
    ParamSpec('odometry_drift', _ODOMETRY.drift_rel, 'Odometry drift per metre travelled '
              '(scale error and heading drift in rad/m; 0.01 = about 1 % of the distance).',
              range=(0.0, 1.0)),
    ParamSpec('odometry_jitter_m', _ODOMETRY.jitter_m, 'Odometry translation noise of each '
              'reading (standard deviation, m; does not accumulate).', range=(0.0, 1.0)),
    ParamSpec('odometry_jitter_deg', _ODOMETRY.jitter_deg, 'Odometry rotation noise of each '
              'reading (standard deviation, degrees; does not accumulate).', range=(0.0, 45.0)),
    ParamSpec('noise_seed', 0, 'Seed of the odometry error and the depth noise (the scene '
              'is set by seed).', range=(0, 2**31 - 1)),
]
CAMERA_PARAMS_BY_NAME = {p.name: p for p in CAMERA_PARAMS}


def ros_value(value: Any) -> Any:
    """A spec value as a ROS parameter value: tuples become (new) lists, the rest is as is."""
    return list(value) if isinstance(value, tuple) else value


def defaults() -> dict[str, Any]:
    """name -> default value of every parameter, as rclpy returns it (arrays as lists)."""
    return {p.name: ros_value(p.default) for p in PARAMS}


def check_value(spec: ParamSpec, value: Any) -> str | None:
    """Reason why ``value`` is outside the spec's range or choices, or None."""
    if spec.range is not None and not spec.range[0] <= value <= spec.range[1]:
        return f'{spec.name}={value} is outside [{spec.range[0]}, {spec.range[1]}]'
    if spec.choices is not None and value not in spec.choices:
        return f'{spec.name}={value!r} is not one of {list(spec.choices)}'
    return None


def validate(values: dict[str, Any]) -> str | None:
    """Reason why this complete set of values is unusable, or None. No side effects."""
    for name, value in values.items():
        if (reason := check_value(PARAMS_BY_NAME[name], value)) is not None:
            return reason
    cameras = list(values['cameras'])
    if not cameras:
        return 'cameras must list at least one camera namespace'
    if len(set(cameras)) != len(cameras):
        return f'cameras contains duplicates: {cameras}'
    for name in ('image_topic', 'camera_info_topic', 'depth_topic'):
        if not _TOPIC_RE.match(values[name]) or values[name].startswith(('/', '~')):
            return f'{name}={values[name]!r} must be a relative topic name (e.g. image_raw)'
    for cam in cameras:
        if not _TOPIC_RE.match(cam):
            return f'camera namespace {cam!r} is not a valid ROS name'
    for name in ('world_frame', 'object_frame_prefix'):
        if not _FRAME_RE.match(values[name]):
            return f'{name}={values[name]!r} is not a valid frame name'
    if values['camera_frame'] and not _FRAME_RE.match(values['camera_frame']):
        return f"camera_frame={values['camera_frame']!r} is not a valid frame name"
    for name in ('odom_frame', 'odom_camera_frame'):
        if values[name] and not _FRAME_RE.match(values[name]):
            return f'{name}={values[name]!r} is not a valid frame name'
    if values['odom_camera_frame'] and len(cameras) > 1:
        return ('odom_camera_frame must be empty with several cameras (each camera\'s image '
                'frame_id is looked up)')
    if values['camera_frame'] and len(cameras) > 1:
        return 'camera_frame must be empty with several cameras (each gets <frame_id>_estimated)'
    try:
        pipeline_config(values).validate()
    except ConfigError as exc:
        return str(exc)
    return None


def validate_camera(values: dict[str, Any]) -> str | None:
    """Reason why this complete set of synthetic camera values is unusable, or None."""
    for name, value in values.items():
        if (reason := check_value(CAMERA_PARAMS_BY_NAME[name], value)) is not None:
            return reason
    for name in ('frame_id', 'world_frame', 'odom_frame'):
        if not _FRAME_RE.match(values[name]):
            return f'{name}={values[name]!r} is not a valid frame name'
    frames = [values['frame_id'], values['world_frame'], values['odom_frame']]
    if values['publish_odometry'] and len(set(frames)) < 3:
        # TF: each frame has one parent; world -> odom -> frame_id needs three frames.
        return f'frame_id, world_frame and odom_frame must differ, got {frames}'
    if values['depth_min_m'] >= values['depth_max_m']:
        return (f"depth_min_m={values['depth_min_m']} must be below "
                f"depth_max_m={values['depth_max_m']}")
    return None


def pipeline_config(values: dict[str, Any]) -> PipelineConfig:
    """The (unvalidated) PipelineConfig these parameter values describe."""
    fields = {}
    for spec in PARAMS:
        if spec.config_field:
            value = values[spec.name]
            fields[spec.config_field] = (value if spec.codec is None
                                         else _CODECS[spec.codec][1](value))
    return PipelineConfig(**fields)


def engine_kwargs(values: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``engines.factory.create_engine`` (empty strings mean default).

    ``backend`` 'oracle' serves the ground truth of the scene the ``oracle_*`` parameters
    describe (the synthetic camera's scene, built by the same ``live_scene_config``)."""
    if values['backend'] == 'oracle':
        from pointmap_ros.data.scenes import live_scene_config
        return {'backend': 'oracle', 'precision': values['precision'],
                'scene': live_scene_config(values['oracle_scene'], values['oracle_height'],
                                           values['oracle_width'], values['oracle_frames'],
                                           values['oracle_fps']),
                'seed': values['oracle_seed']}
    kwargs = {'backend': values['backend'], 'precision': values['precision']}
    if values['device'] != 'auto':  # the factory lets each backend choose when None
        kwargs['device'] = values['device']
    for param, key in (('model', 'checkpoint'), ('onnx_dir', 'onnx_dir'),
                       ('engine_path', 'engine_path'), ('engine_cache_dir', 'cache_dir')):
        if values[param]:
            kwargs[key] = values[param]
    return kwargs


def declare_parameters(node, specs: list[ParamSpec] = PARAMS) -> dict[str, Any]:
    """Declare every parameter of ``specs`` on ``node`` with its descriptor; return the values
    in force.

    The node registers its on-set validation callback *before* calling this, so values from
    the YAML file or the command line are validated at start-up exactly like runtime changes.
    """
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    for spec in specs:
        notes = [spec.description]
        if spec.choices:
            notes.append(f'One of {list(spec.choices)}.')
        notes.append('[DYNAMIC]' if spec.dynamic else 'Read-only after start-up.')
        descriptor = ParameterDescriptor(name=spec.name, description=' '.join(notes),
                                         read_only=not spec.dynamic)
        if spec.range is not None and isinstance(spec.default, float):
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(spec.range[0]), to_value=float(spec.range[1]), step=0.0)]
        elif spec.range is not None and isinstance(spec.default, int):
            descriptor.integer_range = [IntegerRange(
                from_value=int(spec.range[0]), to_value=int(spec.range[1]), step=1)]
        node.declare_parameter(spec.name, ros_value(spec.default), descriptor)
    return {spec.name: node.get_parameter(spec.name).value for spec in specs}


_YAML_SECTIONS = {
    'cameras': 'Inputs', 'max_rate_hz': 'Scheduling', 'output_qos': 'Outputs',
    'backend': 'Engine', 'oracle_scene': "Backend 'oracle' (must match the synthetic camera)",
    'input_size': 'Pipeline (PipelineConfig; defaults follow pointmap_ros/pipeline/config.py)',
}


def _yaml_value(value) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, list):
        return '[' + ', '.join(_yaml_value(v) for v in value) + ']'
    return repr(value)


def render_yaml() -> str:
    """config/dynamic_recon.yaml as generated from the table (``python -m
    pointmap_ros.ros.params > config/dynamic_recon.yaml``); a test keeps the file equal."""
    import textwrap
    lines = ['# Parameters of dynamic_recon_node, generated from the table in',
             '# pointmap_ros/ros/params.py (python -m pointmap_ros.ros.params). [DYNAMIC] = may',
             '# change at runtime (ros2 param set, rqt_reconfigure); the others are read once',
             '# at start-up. Reference: docs/ros_interface.md. /** matches any node name.',
             '/**:', '  ros__parameters:']
    for spec in PARAMS:
        if spec.name in _YAML_SECTIONS:
            lines += ['', f'    # --- {_YAML_SECTIONS[spec.name]} ---']
        notes = [f'range [{spec.range[0]}, {spec.range[1]}]'] if spec.range else []
        notes += [f"one of {', '.join(spec.choices)}"] if spec.choices else []
        text = spec.description + (f" ({'; '.join(notes)})" if notes else '')
        text += ' [DYNAMIC]' if spec.dynamic else ''
        lines += ['    # ' + line for line in textwrap.wrap(text, 92)]
        lines.append(f'    {spec.name}: {_yaml_value(ros_value(spec.default))}')
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    print(render_yaml(), end='')
