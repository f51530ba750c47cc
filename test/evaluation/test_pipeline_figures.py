"""``pointmap-eval-pipeline``'s object-pose metrics and ``--figures``: the published object
frames against the objects' true motion, the per-sequence trace adds up to the scored
metrics, and the figure shows masks, the top view in metres and the flow error per frame
(evaluation/pipeline_eval.py, evaluation/pipeline_figures.py)."""

import json

import numpy as np
import pytest

from pointmap_ros.data.odometry import OdometryModel
from pointmap_ros.engines.oracle_engine import OracleEngine
from pointmap_ros.data.scenes import SceneGenerator
from pointmap_ros.evaluation.pipeline_eval import (
    FrameSnapshot, _material_velocity, eval_scene, evaluate_sequence)
from pointmap_ros.geometry.transforms import se3_apply, se3_compose, se3_inverse
from pointmap_ros.evaluation.pipeline_figures import (
    mask_overlay, save_sequence_figure, sequence_figure)
from pointmap_ros.pipeline import PipelineConfig
from pointmap_ros.tools import eval_pipeline

SEED = 1_000_500  # a validation sequence


def _oracle(scene, seed):
    return OracleEngine.from_scene(scene, seed=seed)


@pytest.fixture(scope='module')
def exact_run():
    """The exact four-map oracle over a short sequence."""
    return evaluate_sequence(_oracle, eval_scene(96, 128, num_frames=8), SEED, PipelineConfig(),
                             keep_trace=True)


def test_exact_maps_keep_object_frames_on_their_objects(exact_run):
    """With the exact four maps every fit is exact: a published object frame stays on the
    material point it started on; its velocity lags the true one only through the tracker's
    velocity filter (``velocity_alpha`` 0.5 while the objects accelerate)."""
    assert exact_run.origin_n > 0 and exact_run.velocity_n == exact_run.origin_n
    assert exact_run.origin_err / exact_run.origin_n < 1e-6  # metres
    speed = exact_run.velocity_speed / exact_run.velocity_n
    assert speed > 0.05  # m/s: the objects do move
    assert exact_run.velocity_err / exact_run.velocity_n < 0.2 * speed


def test_material_velocity_is_the_objects_motion_at_that_point():
    """Against a central difference over the neighbouring frames (0.1 s each side) of the
    same material point, which the generator's frame-indexed poses give independently."""
    scene = eval_scene(48, 64, num_frames=5)
    gen = SceneGenerator(scene, seed=SEED)
    T_world0 = se3_inverse(gen.camera_pose(0))
    rigid = [info.id for info in gen.objects if info.rigid]
    object_id, t = rigid[0], 2
    T_world0_obj = se3_compose(T_world0, gen.object_pose(object_id, t))
    point = se3_apply(T_world0_obj, np.array([0.1, -0.05, 0.2]))  # beside the object's origin
    attached = se3_apply(se3_inverse(T_world0_obj), point)
    before, after = (se3_apply(se3_compose(T_world0, gen.object_pose(object_id, frame)),
                               attached) for frame in (t - 1, t + 1))
    central = (after - before) / (gen.stamp(t + 1) - gen.stamp(t - 1))
    velocity = _material_velocity(gen, object_id, gen.stamp(t), T_world0, point)
    assert np.linalg.norm(central) > 0.05
    np.testing.assert_allclose(velocity, central, atol=0.05 * np.linalg.norm(central))


def test_the_trace_adds_up_to_the_scores(exact_run):
    trace = exact_run.trace
    assert len(trace.frames) == len(trace.snapshots) == exact_run.frames > 0
    assert sum(trace.mask_inter) == exact_run.inter
    assert sum(trace.mask_union) == exact_run.union
    assert [snapshot.frame for snapshot in trace.snapshots] == trace.frames


def test_exact_maps_trace_no_flow_error_and_the_true_camera_path(exact_run):
    trace = exact_run.trace
    moving_epe, moving_zero = np.array(trace.moving_epe_m), np.array(trace.moving_zero_m)
    measured = np.isfinite(moving_epe)
    assert measured.any()
    assert np.all(moving_zero[measured] > 0.01)       # metres per frame gap
    assert np.all(moving_epe[measured] < 1e-5 * moving_zero[measured])  # float32 rounding
    np.testing.assert_allclose(trace.in_metres(np.array(trace.camera)),
                               np.array(trace.camera_true), atol=1e-6)
    assert trace.odometry is None
    assert trace.tracks and trace.objects_true


def test_the_trace_holds_the_odometrys_own_path():
    """1 % drift per metre travelled plus jitter of 1 mm: every frame's reading, in the
    first camera's frame like the true path."""
    score = evaluate_sequence(_oracle, eval_scene(48, 64, num_frames=5), SEED, PipelineConfig(),
                              odometry=OdometryModel().scaled(0.01), keep_trace=True)
    trace = score.trace
    assert trace.odometry.shape == (5, 3)
    np.testing.assert_allclose(trace.odometry[0], 0.0, atol=1e-12)
    true_path = np.array(trace.camera_true)  # output frames 1..4
    assert np.max(np.linalg.norm(trace.odometry[1:] - true_path, axis=1)) < 0.01


def test_without_keep_trace_no_images_are_kept():
    score = evaluate_sequence(_oracle, eval_scene(48, 64, num_frames=3), SEED, PipelineConfig())
    assert score.trace is None


def test_mask_overlay_colours_hits_false_pixels_and_misses():
    motion = np.array([[True, True], [False, False]])
    motion_true = np.array([[True, False], [True, False]])
    snapshot = FrameSnapshot(0, np.zeros((2, 2, 3), np.uint8), motion, motion_true,
                             np.zeros((2, 2), np.int32))
    overlay = mask_overlay(snapshot, opacity=1.0)
    assert overlay[0, 0].tolist() == [0, 200, 0]      # moving and masked: green
    assert overlay[0, 1].tolist() == [230, 30, 30]    # static but masked: red
    assert overlay[1, 0].tolist() == [40, 110, 255]   # moving but missed: blue
    assert overlay[1, 1].tolist() == [0, 0, 0]        # static, unmasked: the image


def test_the_figure_has_masks_a_metric_top_view_and_flow_errors(exact_run, tmp_path):
    figure = sequence_figure(exact_run.trace, 'oracle, one sequence', exact_run)
    axes = figure.get_axes()
    assert len(axes) == 6
    assert all(axis.get_title() for axis in axes)
    top_view, flow, mask = axes[3], axes[4], axes[5]
    assert top_view.get_xlabel() == 'x, right (m)' and top_view.get_ylabel() == 'z, forward (m)'
    assert 'cm' in flow.get_ylabel() and 'IoU' in mask.get_ylabel()
    labels = top_view.get_legend_handles_labels()[1]
    assert 'camera, true' in labels and 'camera, published' in labels
    assert any(label.startswith('track ') and 'on object' in label for label in labels)
    path = save_sequence_figure(tmp_path / 'sequence.png', exact_run.trace, 'oracle',
                                exact_run)
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_the_command_writes_one_figure_per_sequence(tmp_path):
    figures = tmp_path / 'figures'
    eval_pipeline.main(['--engine', 'oracle-two-map', '--split', 'val', '--sequences', '1',
                        '--static-sequences', '1', '--frames', '5', '--size', '96x128',
                        '--no-progress', '--figures', str(figures)])
    names = sorted(path.name for path in figures.iterdir())
    assert names == ['oracle-two-map-val-1000500.png', 'oracle-two-map-val-1000501-static.png']


def test_the_frame_rate_is_recorded_and_named_in_the_titles(tmp_path):
    out = tmp_path / 'eval.json'
    eval_pipeline.main(['--engine', 'oracle-two-map', '--split', 'val', '--sequences', '1',
                        '--static-sequences', '0', '--frames', '4', '--size', '96x128',
                        '--fps', '30', '--no-progress', '--json', str(out)])
    assert json.loads(out.read_text())['fps'] == 30.0
    args = eval_pipeline.build_parser().parse_args(['--engine', 'oracle-two-map', '--fps', '30'])
    assert eval_pipeline._figure_title(args, 1, False).endswith('30 fps')
    default = eval_pipeline.build_parser().parse_args(['--engine', 'oracle-two-map'])
    assert 'fps' not in eval_pipeline._figure_title(default, 1, False)
