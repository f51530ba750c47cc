"""DynamicReconPipeline on bad network output: implausible focal fits, points behind the
camera, lost tracking, mismatched flow masks, and an input size off the patch grid.

An oracle engine serves exact maps and corrupts chosen pairs, so every check is exact.
Scenes are small (120x160, <= 12 frames) to keep the file fast on two cores.
"""

import dataclasses
import zlib

import numpy as np
import pytest
import torch

from pointmap_ros.data.scenes import SceneConfig, SceneGenerator
from pointmap_ros.engines.oracle_engine import OracleEngine
from pointmap_ros.errors import ConfigError, InputError, PoseError
from pointmap_ros.geometry.transforms import pose_error, se3_compose, se3_inverse
from pointmap_ros.pipeline import DynamicReconPipeline, FrameInput, PipelineConfig
from pointmap_ros.tools.noise_study import EXACT_CONFIG

torch.set_num_threads(1)

H, W = 120, 160
# At the default 5 px, RANSAC's own minimal sample plus chance hits reach 6 "inliers" on
# random points for ~40 % of seeds; at 1 px PnP fails on them every time (exact maps are
# exact at any threshold).
ROBUST = dict(EXACT_CONFIG, pnp_reprojection_px=1.0)


def scene(num_frames: int) -> SceneConfig:
    return SceneConfig(height=H, width=W, num_frames=num_frames, fps=10.0, preset='demo',
                       num_objects=3, include_deformable=False, principal_offset=(0.0, 0.0))


class _CorruptOracle(OracleEngine):
    """Exact maps, except that pairs whose newer frame is in ``bad`` get ``corrupt(maps)``."""

    def __init__(self, config: SceneConfig, corrupt, bad):
        base = OracleEngine.from_scene(config)
        super().__init__(base._source, (H, W), by_frame=True)
        self.scene, self.corrupt, self.bad, self.fps = base.scene, corrupt, set(bad), config.fps

    def decode(self, enc_i, enc_j, frame_i, frame_j):
        maps = super().decode(enc_i, enc_j, frame_i, frame_j)
        return self.corrupt(maps) if round(frame_j.stamp * self.fps) in self.bad else maps


def _garbage(maps):
    """Confident points with no consistent camera (what a collapsed network produces)."""
    rng = np.random.default_rng(zlib.crc32(maps.key_j.encode()))  # new garbage per pair
    pts = {k: rng.uniform(-1, 1, size=(H, W, 3)).astype(np.float32)
           for k in ('pts_i_ti', 'pts_i_tj', 'pts_j_ti', 'pts_j_tj')}
    return dataclasses.replace(maps, **pts)


def _flat_focal(maps):
    """``P_i(t_i)`` squashed 100x in x and y: its focal fit is f * 100, implausible."""
    p = maps.pts_i_ti.copy()
    p[..., :2] /= 100
    return dataclasses.replace(maps, pts_i_ti=p)


def _mirror_top_rows(maps):
    """Rows 0-19 of ``P_j(t_j)`` mirrored behind camera i (confidence untouched)."""
    p = maps.pts_j_tj.copy()
    p[:20] *= -1
    return dataclasses.replace(maps, pts_j_tj=p)


def _run(engine, frames, config, with_k=False):
    """(outputs or raised errors, per frame) of ``engine.scene``'s frames in order."""
    pipe = DynamicReconPipeline(engine, config)
    gen = engine.scene
    results = []
    for t in frames:
        f = gen.render(t)
        try:
            results.append(pipe.process(FrameInput(f.rgb, f.stamp, K=gen.K if with_k else None)))
        except PoseError as exc:
            results.append(exc)
    return pipe, results


def test_implausible_focal_falls_back_to_median_then_prior():
    cfg = scene(7)
    K_true = SceneGenerator(cfg).K
    # Frames 1-3 fit exactly; the fits of frames 4-6 are 100x too long and rejected.
    engine = _CorruptOracle(cfg, _flat_focal, bad=range(4, 7))
    pipe, outs = _run(engine, range(7), PipelineConfig(**EXACT_CONFIG))
    for o in outs[1:]:
        assert o.intrinsics_estimated
        np.testing.assert_allclose(o.K, K_true, rtol=1e-4)  # the median of frames 1-3
    assert pipe.event_counts() == {'focal_rejected': 3}
    # From the very first pair: no plausible fit yet, so the documented 60-degree prior.
    pipe, outs = _run(_CorruptOracle(cfg, _flat_focal, bad=range(7)), range(3),
                      PipelineConfig(**EXACT_CONFIG))
    prior = 0.5 * W / np.tan(np.radians(30))
    assert PipelineConfig().prior_focal_rel * W == pytest.approx(prior)
    for o in outs[1:]:
        assert o.intrinsics_estimated and o.K[0, 0] == pytest.approx(prior)
    assert pipe.event_counts() == {'focal_rejected': 2}


def test_valid_excludes_points_behind_the_camera_and_flow_has_its_own_mask():
    cfg = scene(5)
    engine = _CorruptOracle(cfg, _mirror_top_rows, bad=range(5))
    _, outs = _run(engine, range(5), PipelineConfig(**EXACT_CONFIG), with_k=True)
    gen = engine.scene
    for t, o in enumerate(outs[1:], start=1):
        assert not o.valid[:20].any() and o.valid[20:].mean() > 0.9
        assert np.all(o.points_cam[o.valid][:, 2] > 0)
        for arr in (o.points_cam, o.points_world):
            assert np.isnan(arr[~o.valid]).all() and np.isfinite(arr[o.valid]).all()
        assert not (o.motion_mask & ~o.valid).any() and not (o.instance_ids[~o.valid]).any()
        # Flow: finite exactly on flow_valid, which lies within valid.
        assert o.flow_valid.dtype == bool and o.flow_valid.shape == (H, W)
        assert not (o.flow_valid & ~o.valid).any() and o.flow_valid.mean() > 0.5
        np.testing.assert_array_equal(np.isfinite(o.flow).all(-1), o.flow_valid)
        assert np.isnan(o.flow[~o.flow_valid]).all()
        # The mirrored rows were RANSAC outliers: the pose stays exact.
        T_gt = se3_compose(se3_inverse(gen.render(0).T_world_cam), gen.render(t).T_world_cam)
        assert pose_error(o.T_world_cam, T_gt)[0] < 1e-3


def test_lost_tracking_raises_pose_errors_then_reanchors_and_recovers():
    cfg = scene(12)
    # Frames 2-3: two failures (below pose_reset_after = 3), frame 4 good again; frames 5-7:
    # three failures, so frame 7 re-anchors; frames 8-11 must be tracked again.
    engine = _CorruptOracle(cfg, _garbage, bad=(2, 3, 5, 6, 7))
    config = PipelineConfig(pose_reset_after=3, **ROBUST)
    pipe, res = _run(engine, range(12), config, with_k=True)
    gen = engine.scene
    T = [gen.render(t).T_world_cam for t in range(12)]
    for t in (2, 3, 5, 6):
        assert isinstance(res[t], PoseError) and not isinstance(res[t], InputError), t
        assert res[t].reason in ('pnp_failed', 'pnp_too_few_points', 'no_points')
    assert 'no pose for 2 consecutive frame(s)' in str(res[3])
    # Two failures do not re-anchor: frame 4 is exact against the original keyframe 0.
    assert res[4].keyframe_index == 0
    assert pose_error(res[4].T_world_cam, se3_compose(se3_inverse(T[0]), T[4]))[0] < 1e-3
    assert res[7] is None and pipe.event_counts() == {'pose_reset': 1}
    # Frame 7 is the new keyframe, placed at the last good pose (frame 4's): the world frame
    # is kept, and poses relative to the new keyframe are exact again.
    T_world_kf = res[4].T_world_cam
    for t in range(8, 12):
        o = res[t]
        assert o is not None and o.keyframe_index == res[4].frame_index + 1
        T_kf_cam = se3_compose(se3_inverse(T_world_kf), o.T_world_cam)
        te, re = pose_error(T_kf_cam, se3_compose(se3_inverse(T[7]), T[t]))
        assert te < 1e-3 and re < 0.1, (t, te, re)
        assert np.isfinite(o.points_world[o.valid]).all() and o.valid.mean() > 0.5


def test_reanchoring_releases_the_lost_window():
    cfg = scene(5)
    released = []
    engine = _CorruptOracle(cfg, _garbage, bad=(2, 3))
    engine.forget = released.append
    pipe, res = _run(engine, range(5), PipelineConfig(pose_reset_after=2, **ROBUST))
    assert res[3] is None and res[4] is not None and res[4].keyframe_index == 2
    assert sorted(released) == ['cam0/0', 'cam0/100000000']  # frames 0, 1; not frame 3


class _FreeSizeOracle(OracleEngine):
    """An oracle that, like the torch engine, accepts any multiple of its patch size."""

    patch_size = 16

    @property
    def input_shape(self):
        return None


@pytest.mark.parametrize('size', [(100, 130), (96, 130)])
def test_input_size_off_the_patch_grid_is_rejected_when_built(size):
    engine = _FreeSizeOracle(lambda a, b: None, (H, W))
    with pytest.raises(ConfigError, match=rf'input_size = \({size[0]}, {size[1]}\).*patch '
                                          r'size 16') as err:
        DynamicReconPipeline(engine, PipelineConfig(input_size=size))
    assert err.value.name == 'input_size'
    assert DynamicReconPipeline(engine, PipelineConfig(input_size=(96, 128))).size == (96, 128)


def test_input_size_checked_against_a_torch_engine():
    from pointmap_ros.engines.torch_engine import TorchEngine
    from pointmap_ros.model.config import ModelConfig
    from pointmap_ros.model.dpm import DynamicPointMapNet
    torch.manual_seed(0)
    model = DynamicPointMapNet(ModelConfig.preset('tiny', img_size=(32, 32)))
    patch = model.config.patch_size
    with pytest.raises(ConfigError, match=f'patch size {patch}'):
        DynamicReconPipeline(TorchEngine(model), PipelineConfig(input_size=(patch * 2 + 4, 64)))
    # A fixed engine resolution wins over input_size, so there is nothing to check.
    pipe = DynamicReconPipeline(TorchEngine(model, input_shape=(32, 32)),
                                PipelineConfig(input_size=(100, 130)))
    assert pipe.size == (32, 32)


@pytest.mark.parametrize('kw, name', [
    ({'focal_min_rel': 0.0}, 'focal_min_rel'),
    ({'focal_min_rel': 2.0, 'focal_max_rel': 1.0}, 'focal_min_rel'),
    ({'focal_max_rel': float('inf')}, 'focal_min_rel'),
    ({'focal_prior_fov_deg': 180.0}, 'focal_prior_fov_deg'),
    ({'focal_prior_fov_deg': 170.0}, 'focal_prior_fov_deg'),  # prior 0.04 max(H, W)
    ({'pose_reset_after': 0}, 'pose_reset_after'),
])
def test_robustness_parameters_are_validated(kw, name):
    with pytest.raises(ConfigError, match=name) as err:
        PipelineConfig(**kw).validate()
    assert err.value.name == name


def test_event_counts_are_shown_in_the_node_diagnostics():
    pytest.importorskip('diagnostic_msgs.msg', reason='ROS 2 message wheels not installed')
    from std_msgs.msg import Header

    from pointmap_ros.ros.diagnostics import NodeStats, build_diagnostics
    pipe, _ = _run(_CorruptOracle(scene(5), _flat_focal, bad=range(5)), range(3),
                   PipelineConfig(**EXACT_CONFIG))
    snap = NodeStats().snapshot(1.0)
    snap['pipeline_events'] = pipe.event_counts()  # as DynamicReconNode fills it
    msg = build_diagnostics('recon', snap, Header().stamp)
    values = {f'{s.name}/{kv.key}': kv.value for s in msg.status for kv in s.values}
    assert values['recon: processing/pipeline focal_rejected'] == '2'
    assert values['recon: processing/dropped total'] == '0'  # not counted as drops
