"""Procedural dynamic scenes with exact ground truth for DPM training, tests and demos.

A :class:`SceneGenerator` ray-casts a closed, textured room with moving rigid objects and
deforming ones (see :mod:`layout`) seen by a moving pinhole camera. Deterministic by seed; no
downloads; pure numpy.

Exactness by construction: for every pixel the ray cast keeps the object id and the hit's
canonical (rest-frame) coordinates. The position of that material point at any time t is
``T_world_obj(t) @ deform(canonical, t)``, an analytic function, so the four DPM maps of a pair,
the scene flow and the motion masks are evaluated, not re-rendered or matched:

- ``P_i(t_i) = depth_i * K^-1 [u, v, 1]`` (projects back onto the pixel centre exactly);
- ``flow_i = R_cami_world (x(t_j) - x(t_i))`` from the analytic positions (exactly 0 for the
  static room); ``P_i(t_j) = P_i(t_i) + flow_i``;
- ``P_j(t_j) = T_cami_camj depth_j K^-1 [u, v, 1]`` and ``P_j(t_i) = P_j(t_j) - flow_j``.

Frames are OpenCV optical (x right, y down, z forward); the world frame is camera 0's optical
frame at t = 0. Frame indices t are integers; time in seconds is ``t / fps``.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

from pointmap_ros.data.layout import SceneEvents, build_layout
from pointmap_ros.data.render import CastResult, cast_frame
from pointmap_ros.errors import ConfigError, InputError
from pointmap_ros.geometry.transforms import se3_inverse
from pointmap_ros.types import DynamicPointMaps, Frame

__all__ = ['SceneConfig', 'ObjectInfo', 'RenderedFrame', 'PairGroundTruth', 'SceneGenerator',
           'SceneEvents', 'PRESETS', 'live_scene_config', 'varied_motion']

PRESETS = ('random', 'demo')

# Light direction (towards the light) in the world frame: above (-y), left and behind the
# camera. Lambertian shading with ambient, so colour depends only on material and normal.
_LIGHT = np.array([-0.35, -1.0, -0.55]) / np.linalg.norm([-0.35, -1.0, -0.55])
_AMBIENT = 0.4


@dataclass
class SceneConfig:
    """Options of a procedural scene.

    Attributes:
        height, width: image size in pixels.
        num_frames: sequence length; frame indices are ``0 .. num_frames - 1``.
        fps: frame rate; frame t is at ``t / fps`` seconds.
        num_objects: moving objects, the deformable one included (>= 3 for 'demo').
        include_deformable: make one object non-rigid (a waving sheet or pulsing ellipsoid).
        num_articulated: articulated objects added by the 'random' preset (a base box with a
            two-link arm; three rigid parts, three ids, chained hinge poses).
        camera_amplitude: camera translation amplitude in metres (0 = static camera).
        object_speed: multiplies the objects' angular frequencies ('random' preset and the
            extra floor objects of 'demo'; the demo's crossing is tied to the sequence length).
        fov_deg: horizontal field of view, used when ``fx`` is None.
        fx: focal length in pixels (fx = fy); overrides ``fov_deg``.
        principal_offset: principal point offset from the image centre as a fraction of
            (width, height); slightly off-centre on purpose so transposed conventions show.
        near, far: valid depth range in metres.
        motion_epsilon: displacement (metres) above which a pixel counts as moving.
        preset: 'random' or 'demo' (see :mod:`pointmap_ros.data.layout`).
        use_photos: texture some surfaces with the sample images matplotlib ships.
        plain_objects: every moving object is one colour (the mean of the texture it would
            have had; the layout and motions are those of the same seed without it), as a
            painted box or a robot's casing is: faces optical flow cannot track.
        cache_frames: how many frames' ray-cast results to keep (pairs reuse them).
        camera_id: camera name used in frame keys ``'<camera_id>/<t>'``.
    """

    height: int = 224
    width: int = 224
    num_frames: int = 30
    fps: float = 10.0
    num_objects: int = 4
    include_deformable: bool = True
    num_articulated: int = 0
    camera_amplitude: float = 0.3
    object_speed: float = 1.0
    fov_deg: float = 70.0
    fx: float | None = None
    principal_offset: tuple = (0.02, -0.015)
    near: float = 0.05
    far: float = 100.0
    motion_epsilon: float = 1e-6
    preset: str = 'random'
    use_photos: bool = True
    plain_objects: bool = False
    cache_frames: int = 64
    camera_id: str = 'cam0'

    def validate(self) -> 'SceneConfig':
        """Raise :class:`ConfigError` naming the first bad field; return self."""
        checks = [
            ('height', self.height >= 8, 'an integer >= 8'),
            ('width', self.width >= 8, 'an integer >= 8'),
            ('num_frames', self.num_frames >= 1, '>= 1'),
            ('fps', self.fps > 0, '> 0'),
            ('num_objects', self.num_objects >= 0, '>= 0'),
            ('num_articulated', self.num_articulated >= 0, '>= 0'),
            ('camera_amplitude', 0 <= self.camera_amplitude <= 1.0, 'in [0, 1] metres'),
            ('object_speed', self.object_speed >= 0, '>= 0'),
            ('fov_deg', 10.0 <= self.fov_deg <= 150.0, 'in [10, 150] degrees'),
            ('fx', self.fx is None or self.fx > 0, 'None or > 0'),
            ('near', 0 < self.near < self.far, 'in (0, far)'),
            ('motion_epsilon', self.motion_epsilon > 0, '> 0'),
            ('preset', self.preset in PRESETS, f'one of {PRESETS}'),
            ('cache_frames', self.cache_frames >= 2, '>= 2'),
        ]
        for name, ok, expected in checks:
            if not ok:
                value = getattr(self, name)
                raise ConfigError(f'SceneConfig.{name} = {value!r}, expected {expected}',
                                  name=name, value=value)
        if self.preset == 'demo' and (self.num_objects < 3 or self.num_frames < 5):
            raise ConfigError(
                f"preset 'demo' needs num_objects >= 3 and num_frames >= 5, got "
                f'{self.num_objects} objects and {self.num_frames} frames', name='preset',
                value=self.preset)
        return self


def varied_motion(seed: int) -> dict:
    """:class:`SceneConfig` overrides that vary a sequence's motion, drawn from ``seed``
    (deterministic): object speed log-uniform in [0.5, 2.5] x (fast objects cover several
    times the default displacement at the same gap), a static camera with probability 0.3
    (static robots are common) else a camera amplitude in [0.1, 0.5] m, 3..6 objects, and an
    articulated object (base + two-link arm) with probability 0.5.

    Training draws it for a share of its sequences (``PairDataConfig.vary_scenes``);
    ``pointmap-eval-pipeline --vary-scenes`` for every sequence, to score the pipeline
    beyond the one scene family its defaults were chosen on.
    """
    rng = np.random.default_rng([int(seed), 0x5CE4E])
    rng.random()  # the dataset's draw of whether to vary at all: keeps its streams unchanged
    return dict(object_speed=float(np.exp(rng.uniform(np.log(0.5), np.log(2.5)))),
                camera_amplitude=0.0 if rng.random() < 0.3 else float(rng.uniform(0.1, 0.5)),
                num_objects=int(rng.integers(3, 7)),
                num_articulated=int(rng.random() < 0.5))


@dataclass(frozen=True)
class ObjectInfo:
    """A moving object: ``id`` (>= 1, as in ``instance_ids``), ``kind``, ``rigid``."""

    id: int
    kind: str
    rigid: bool


@dataclass(frozen=True)
class RenderedFrame:
    """One rendered frame.

    Attributes:
        rgb: ``[H, W, 3]`` uint8.
        depth: ``[H, W]`` float32 metres (z in the camera frame); 0 where invalid.
        T_world_cam: ``[4, 4]`` float64 camera pose.
        instance_ids: ``[H, W]`` int32, 0 = static room, k >= 1 = object id.
        object_poses: ``{id: T_world_obj [4, 4]}`` (for deformables: the local frame's pose).
        K: ``[3, 3]`` float64 intrinsics; stamp: seconds; index: frame index; key: frame key.
    """

    rgb: np.ndarray
    depth: np.ndarray
    T_world_cam: np.ndarray
    instance_ids: np.ndarray
    object_poses: dict
    K: np.ndarray
    stamp: float
    index: int
    key: str

    def frame(self, camera_id: str = '') -> Frame:
        """The image as an engine :class:`~pointmap_ros.types.Frame` (same key)."""
        return Frame(image=self.rgb, stamp=self.stamp, key=self.key, camera_id=camera_id)


@dataclass(frozen=True)
class PairGroundTruth:
    """Exact ground truth of the pair (I_i at t_i, I_j at t_j), all in camera i's frame.

    Attributes:
        maps: the four point maps (metres, ``metric=True``); conf is 1 where valid and 0
            elsewhere; invalid pixels hold zeros (finite, never NaN).
        valid_i, valid_j: ``[H, W]`` bool, the pixel hit a surface within [near, far].
        flow_i, flow_j: ``[H, W, 3]`` metres, motion of the pixel's surface point from t_i to
            t_j in camera i's frame (computed in float64, then cast; equals the map difference
            up to float32 rounding).
        motion_i, motion_j: ``[H, W]`` bool, that point moved more than ``motion_epsilon``.
        T_cami_camj: ``[4, 4]`` float64.
        instance_i, instance_j: ``[H, W]`` int32 ids (0 = room or invalid).
    """

    maps: DynamicPointMaps
    valid_i: np.ndarray
    valid_j: np.ndarray
    flow_i: np.ndarray
    flow_j: np.ndarray
    motion_i: np.ndarray
    motion_j: np.ndarray
    T_cami_camj: np.ndarray
    instance_i: np.ndarray
    instance_j: np.ndarray



def live_scene_config(preset: str, height: int, width: int, frames: int,
                      fps: float) -> SceneConfig:
    """The validated SceneConfig of a scene played live: what the synthetic camera node plays
    and what ``backend:=oracle`` serves the ground truth of. Both build it here from the
    same five parameters, so they always describe the same scene."""
    return SceneConfig(preset=preset, height=int(height), width=int(width),
                       num_frames=int(frames), fps=float(fps)).validate()

class SceneGenerator:
    """Renders a procedural dynamic scene and its exact pair ground truth.

    Args:
        config: scene options (validated here; :class:`ConfigError` when invalid).
        seed: everything (layout, textures, motions) is a function of it.
    """

    def __init__(self, config: SceneConfig | None = None, seed: int = 0):
        self.config = (config or SceneConfig()).validate()
        cfg = self.config
        fx = cfg.fx
        if fx is None:
            fx = 0.5 * cfg.width / np.tan(np.radians(cfg.fov_deg) / 2)
        cx = (cfg.width - 1) / 2 + cfg.principal_offset[0] * cfg.width
        cy = (cfg.height - 1) / 2 + cfg.principal_offset[1] * cfg.height
        self.K = np.array([[fx, 0.0, cx], [0.0, fx, cy], [0.0, 0.0, 1.0]])
        layout = build_layout(cfg, np.random.default_rng(seed), 0.5 * cfg.width / fx)
        self._room = layout.room
        self._objects = layout.objects
        self._camera = layout.camera
        self.events: SceneEvents | None = layout.events
        u, v = np.meshgrid(np.arange(cfg.width, dtype=np.float64),
                           np.arange(cfg.height, dtype=np.float64))
        # Rays with unit z: the ray parameter of a hit is its depth.
        self._rays = np.stack([(u - cx) / fx, (v - cy) / fx, np.ones_like(u)], axis=-1)
        self._cache: collections.OrderedDict[int, CastResult] = collections.OrderedDict()
        self._poses: dict[tuple[int, float], np.ndarray] = {}

    @property
    def num_frames(self) -> int:
        return self.config.num_frames

    @property
    def objects(self) -> list[ObjectInfo]:
        return [ObjectInfo(o.id, o.kind, o.rigid) for o in self._objects]

    def stamp(self, t: int) -> float:
        """Time of frame ``t`` in seconds (``t / fps``)."""
        return t / self.config.fps

    def key(self, t: int) -> str:
        """Frame key ``'<camera_id>/<t>'`` used in :class:`Frame` and point maps."""
        return f'{self.config.camera_id}/{t}'

    def camera_pose(self, t: int) -> np.ndarray:
        """``T_world_cam`` ``[4, 4]`` of frame ``t``."""
        return self._camera.pose(self.stamp(t))

    def object_pose(self, obj_id: int, t: int) -> np.ndarray:
        """``T_world_obj`` ``[4, 4]`` of object ``obj_id`` at frame ``t``."""
        return self.object_pose_at(obj_id, self.stamp(t))

    def object_pose_at(self, obj_id: int, time_s: float) -> np.ndarray:
        """``T_world_obj`` ``[4, 4]`` of object ``obj_id`` at any time (seconds; for a
        deforming object its local frame's pose)."""
        return self._object(obj_id).pose(time_s)

    def points_at(self, ids: np.ndarray, canonical: np.ndarray, time_s: float) -> np.ndarray:
        """World positions ``[N, 3]`` at ``time_s`` seconds of material points.

        Args:
            ids: ``[N]`` object ids (0 = room, whose canonical coordinates are world points).
            canonical: ``[N, 3]`` rest-frame coordinates.
        """
        out = np.array(canonical, dtype=np.float64, copy=True)
        for obj in self._objects:
            sel = ids == obj.id
            if sel.any():
                pose = self._pose(obj, time_s)
                out[sel] = obj.deform(canonical[sel], time_s) @ pose[:3, :3].T + pose[:3, 3]
        return out

    def render(self, t: int) -> RenderedFrame:
        """Render frame ``t`` (cached); see :class:`RenderedFrame`."""
        hits = self._hits(t)
        return RenderedFrame(
            rgb=hits.rgb.copy(), depth=np.where(hits.valid, hits.depth, 0.0).astype(np.float32),
            T_world_cam=hits.T_world_cam.copy(), instance_ids=np.where(hits.valid, hits.ids, 0),
            object_poses={k: v.copy() for k, v in hits.object_poses.items()}, K=self.K.copy(),
            stamp=self.stamp(t), index=t, key=self.key(t))

    def pair_ground_truth(self, i: int, j: int, dtype=np.float32) -> PairGroundTruth:
        """Exact ground truth of the pair (frame i, frame j); see :class:`PairGroundTruth`.

        Args:
            dtype: dtype of the maps and flows (float64 keeps full precision for tests).
        """
        hi, hj = self._hits(i), self._hits(j)
        ti, tj = self.stamp(i), self.stamp(j)
        T_cami_world = se3_inverse(hi.T_world_cam)
        T_cami_camj = T_cami_world @ hj.T_world_cam
        rot = T_cami_world[:3, :3]
        # Everything image-sized is computed directly in `dtype` (half the memory traffic in
        # float32); only the object flows are evaluated in float64 and then cast.
        flow_i, moved_i = self._flow(hi, ti, tj, rot, dtype)
        flow_j, moved_j = self._flow(hj, ti, tj, rot, dtype)
        rays = self._rays.astype(dtype, copy=False)
        p_i_ti = np.where(hi.valid, hi.depth, 0.0).astype(dtype)[..., None] * rays
        p_j_tj = np.where(hj.valid, hj.depth, 0.0).astype(dtype)[..., None] * rays
        # [H, W, 3] @ [3, 3], not one flat [H * W, 3] product: the flat one makes OpenBLAS
        # spin up threads that stay busy (~40x slower on a shared 2-core machine).
        p_j_tj = p_j_tj @ T_cami_camj[:3, :3].T.astype(dtype) + T_cami_camj[:3, 3].astype(dtype)
        p_j_tj[~hj.valid] = 0.0
        conf_i = hi.valid.astype(dtype)
        conf_j = hj.valid.astype(dtype)
        maps = DynamicPointMaps(
            pts_i_ti=p_i_ti, pts_i_tj=p_i_ti + flow_i, pts_j_ti=p_j_tj - flow_j, pts_j_tj=p_j_tj,
            conf_i_ti=conf_i, conf_i_tj=conf_i.copy(), conf_j_ti=conf_j, conf_j_tj=conf_j.copy(),
            key_i=self.key(i), key_j=self.key(j), metric=True)
        return PairGroundTruth(
            maps=maps, valid_i=hi.valid.copy(), valid_j=hj.valid.copy(), flow_i=flow_i,
            flow_j=flow_j, motion_i=moved_i, motion_j=moved_j, T_cami_camj=T_cami_camj,
            instance_i=np.where(hi.valid, hi.ids, 0), instance_j=np.where(hj.valid, hj.ids, 0))

    # -- internals -----------------------------------------------------------------------

    def _pose(self, obj, time_s: float) -> np.ndarray:
        """``obj.pose(time_s)``, memoised: training draws many pairs from one sequence and
        re-evaluating the (chained) trajectories was a third of a pair's cost. The matrices
        are the same arrays the trajectory returns, so the ground truth is bit-identical."""
        key = (obj.id, float(time_s))
        pose = self._poses.get(key)
        if pose is None:
            if len(self._poses) > 64 * max(len(self._objects), 1):
                self._poses.clear()
            pose = self._poses[key] = obj.pose(time_s)
        return pose

    def _object(self, obj_id: int):
        for obj in self._objects:
            if obj.id == obj_id:
                return obj
        raise InputError(f'no object with id {obj_id}; ids are {[o.id for o in self._objects]}',
                         'object_id', actual=obj_id, expected=[o.id for o in self._objects])

    def _flow(self, hits: CastResult, t_from: float, t_to: float, rot: np.ndarray, dtype):
        """Camera-frame displacement ``[H, W, 3]`` and moved mask of a frame's surface points.

        Only object pixels are evaluated (in float64); the room's flow stays exactly zero.
        """
        flow = np.zeros(hits.canonical.shape, dtype=dtype)
        moved = np.zeros(hits.ids.shape, dtype=bool)
        px = np.nonzero(hits.valid & (hits.ids > 0))
        if px[0].size:
            ids, canon = hits.ids[px], hits.canonical[px]
            step = (self.points_at(ids, canon, t_to) - self.points_at(ids, canon, t_from)) @ rot.T
            flow[px] = step
            moved[px] = np.linalg.norm(step, axis=1) > self.config.motion_epsilon
        return flow, moved

    def _hits(self, t: int) -> CastResult:
        if not (isinstance(t, (int, np.integer)) and 0 <= t < self.num_frames):
            raise InputError(f'frame index {t!r} out of range [0, {self.num_frames})',
                             'frame_index', actual=t, expected=(0, self.num_frames))
        t = int(t)
        if t in self._cache:
            self._cache.move_to_end(t)
            return self._cache[t]
        hits = cast_frame(self._room, self._objects, self._rays, self.K, self.camera_pose(t),
                          self.stamp(t), self.config.near, self.config.far, _LIGHT, _AMBIENT)
        self._cache[t] = hits
        while len(self._cache) > self.config.cache_frames:
            self._cache.popitem(last=False)
        return hits
