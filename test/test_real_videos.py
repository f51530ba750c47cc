"""The core on real image content: the clips of ``shared/data/real_videos`` (no ground truth).

Robustness and contracts only: decoding, preprocessing to the model resolution, the pipeline
with the shipped model on real frames (finite, shaped, plausible outputs) and
``pointmap-run-video``. The clips are never copied into the repository; the tests that read
them are skipped where the shared folder is absent.
"""

import json
import math

import cv2
import numpy as np
import pytest
import torch

from pointmap_ros.assets import SHIPPED_MODEL
from pointmap_ros.pipeline.preprocess import resize_crop
from pointmap_ros.data.video import VideoInfo, iter_video, probe_video, read_video, stamp_rate
from pointmap_ros.errors import ConfigError, InputError
from pointmap_ros.model.checkpoint import read_checkpoint_meta

torch.set_num_threads(1)

# Container facts of the six clips (shared/data/real_videos/README.md): frames, width, height.
CLIPS = {'car': (13, 854, 480), 'horse': (18, 854, 480), 'pstudio': (12, 640, 360),
         'stroller': (17, 854, 480), 'tennis': (11, 854, 480), 'tesla': (18, 1140, 740)}
# Two aspect ratios (16:9 and 1.54:1) through the pipeline, a few frames each.
PIPELINE_CLIPS = ('car', 'tesla')
PIPELINE_FRAMES = 4


@pytest.fixture(scope='module')
def videos(shared_dir):
    folder = shared_dir / 'data' / 'real_videos'
    missing = [n for n in CLIPS if not (folder / f'{n}.mp4').is_file()]
    if missing:
        pytest.skip(f'real clips {missing} not found in {folder}')
    return folder


@pytest.fixture(scope='module')
def native_size():
    return tuple(read_checkpoint_meta(SHIPPED_MODEL)['config']['img_size'])


# -- decoding --------------------------------------------------------------------------------
@pytest.mark.parametrize('name', sorted(CLIPS))
def test_every_clip_decodes_fully(videos, name):
    count, width, height = CLIPS[name]
    info, frames = read_video(videos / f'{name}.mp4')
    assert (info.frame_count, info.width, info.height) == (count, width, height)
    assert info.fps == 1.0
    assert len(frames) == count
    assert [f.index for f in frames] == list(range(count))
    for f in frames:
        assert f.image.shape == (height, width, 3) and f.image.dtype == np.uint8
    stamps = np.array([f.stamp for f in frames])
    assert np.all(np.diff(stamps) > 0)
    np.testing.assert_allclose(stamps, np.arange(count) / info.fps)


def test_frames_are_rgb_not_bgr(videos):
    path = videos / 'car.mp4'
    cap = cv2.VideoCapture(str(path))
    ok, bgr = cap.read()
    cap.release()
    assert ok
    frame = next(iter_video(path))
    np.testing.assert_array_equal(frame.image, bgr[..., ::-1])


def test_stride_max_frames_and_fps_override(videos):
    frames = list(iter_video(videos / 'pstudio.mp4', stride=3, max_frames=3, fps=10.0))
    assert [f.index for f in frames] == [0, 3, 6]
    np.testing.assert_allclose([f.stamp for f in frames], [0.0, 0.3, 0.6])
    assert len(list(iter_video(videos / 'pstudio.mp4', stride=5))) == 3  # frames 0, 5, 10


def test_mono_video_decodes_to_rgb(tmp_path):
    path = tmp_path / 'mono.avi'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 4.0, (64, 48),
                             isColor=False)
    for i in range(3):
        writer.write(np.full((48, 64), 60 * i, np.uint8))
    writer.release()
    info, frames = read_video(path)
    assert info.fps == 4.0 and len(frames) == 3
    img = frames[2].image
    assert img.shape == (48, 64, 3)
    assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 0], img[..., 2])


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match='does not exist') as err:
        probe_video(tmp_path / 'nope.mp4')
    assert err.value.reason == 'missing'


def test_truncated_copy_is_an_input_error(videos, tmp_path):
    data = (videos / 'car.mp4').read_bytes()
    cut = tmp_path / 'car_cut.mp4'
    cut.write_bytes(data[:len(data) // 2])  # the index (moov) sits at the end of these files
    with pytest.raises(InputError, match='cannot open') as err:
        read_video(cut)
    assert err.value.reason == 'decode'


def test_text_file_named_mp4_is_an_input_error(tmp_path):
    fake = tmp_path / 'notes.mp4'
    fake.write_text('not a video\n' * 100)
    with pytest.raises(InputError, match='cannot open') as err:
        list(iter_video(fake))
    assert err.value.reason == 'decode'


def test_video_without_frames_is_an_input_error(tmp_path):
    path = tmp_path / 'empty.avi'
    cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 5.0, (64, 48)).release()
    with pytest.raises(InputError, match='no frame could be decoded') as err:
        read_video(path)
    assert err.value.reason == 'empty'


@pytest.mark.parametrize('kw', [{'stride': 0}, {'max_frames': 0}, {'fps': 0.0},
                                {'fps': math.inf}])
def test_bad_read_parameters(videos, kw):
    with pytest.raises(ConfigError, match=next(iter(kw))):
        list(iter_video(videos / 'car.mp4', **kw))


def test_stamp_rate_needs_a_rate():
    info = VideoInfo(path=None, fps=math.nan, frame_count=-1, width=8, height=8)
    assert stamp_rate(info, 30.0) == 30.0
    with pytest.raises(InputError, match='no frame rate') as err:
        stamp_rate(info)
    assert err.value.reason == 'fps'


# -- preprocessing ---------------------------------------------------------------------------
@pytest.mark.parametrize('name', ['car', 'pstudio', 'tesla'])
def test_preprocess_real_frame_keeps_aspect_and_scales_k(videos, native_size, name):
    _, w, h = CLIPS[name]
    image = next(iter_video(videos / f'{name}.mp4')).image
    K = np.array([[0.9 * w, 0, (w - 1) / 2], [0, 0.9 * w, (h - 1) / 2], [0, 0, 1]])
    H, W = native_size
    out, K_out, _ = resize_crop(image, native_size, K)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    # One scale for both axes (up to rounding to whole pixels), then a centred crop.
    s = max(H / h, W / w)
    rw, rh = max(W, round(w * s)), max(H, round(h * s))
    assert abs(rw / w - rh / h) <= 1.0 / min(h, w)
    x0, y0 = (rw - W) // 2, (rh - H) // 2
    np.testing.assert_allclose(K_out, [[K[0, 0] * rw / w, 0, (K[0, 2] + 0.5) * rw / w - 0.5 - x0],
                                       [0, K[1, 1] * rh / h, (K[1, 2] + 0.5) * rh / h - 0.5 - y0],
                                       [0, 0, 1]], rtol=1e-12)
    assert abs(K_out[0, 0] / K_out[1, 1] - 1) < 1e-2           # square pixels stay square
    assert abs(K_out[0, 2] - (W - 1) / 2) <= 0.5 and abs(K_out[1, 2] - (H - 1) / 2) <= 0.5
    # The content is the centre of the clip, not stretched: compare with a direct resize of
    # the matching source window.
    crop = image[int(y0 / s):int(y0 / s) + round(H / s), int(x0 / s):int(x0 / s) + round(W / s)]
    ref = cv2.resize(crop, (W, H), interpolation=cv2.INTER_AREA)
    assert np.abs(out.astype(int) - ref).mean() < 6.0


# -- pipeline with the shipped model ---------------------------------------------------------
@pytest.fixture(scope='module')
def engine(native_size):
    from pointmap_ros.engines.factory import create_engine
    return create_engine('torch', checkpoint=SHIPPED_MODEL, device='cpu',
                         input_shape=native_size)


@pytest.fixture(scope='module', params=PIPELINE_CLIPS)
def clip_run(request, videos, engine, native_size):
    from pointmap_ros.pipeline import DynamicReconPipeline, FrameInput, PipelineConfig
    name = request.param
    pipe = DynamicReconPipeline(engine, PipelineConfig(input_size=native_size))
    frames = list(iter_video(videos / f'{name}.mp4', max_frames=PIPELINE_FRAMES))
    outputs = [pipe.process(FrameInput(image=f.image, stamp=f.stamp, camera_id=name))
               for f in frames]
    engine.clear_cache()
    return name, frames, outputs


def test_pipeline_outputs_on_real_frames(clip_run, native_size):
    name, frames, outputs = clip_run
    H, W = native_size
    assert outputs[0] is None                       # the first frame has no pair yet
    assert all(o is not None for o in outputs[1:])
    for o, f in zip(outputs[1:], frames[1:]):
        assert o.camera_id == name and o.stamp == f.stamp
        assert o.image.shape == (H, W, 3) and o.image.dtype == np.uint8
        for arr in (o.points_cam, o.points_world, o.flow):
            assert arr.shape == (H, W, 3) and arr.dtype == np.float32
        assert o.valid.shape == (H, W) and o.valid.dtype == bool and o.valid.any()
        assert np.isfinite(o.points_cam[o.valid]).all()
        assert np.isfinite(o.points_world[o.valid]).all()
        # Flow needs the pixel gated at both times of its pair: it is finite exactly on
        # flow_valid, a subset of valid; never infinite.
        assert not np.isinf(o.flow).any()
        np.testing.assert_array_equal(np.isfinite(o.flow).all(-1), o.flow_valid)
        assert not (o.flow_valid & ~o.valid).any() and o.flow_valid.any()
        assert o.flow_dt == pytest.approx(1.0)      # consecutive frames of a 1 fps clip
        assert o.confidence.shape == (H, W) and np.all(o.confidence[o.valid] >= 1.0)
        assert o.motion_mask.shape == (H, W) and o.motion_mask.dtype == bool
        assert o.instance_ids.shape == (H, W) and o.instance_ids.dtype == np.int32
        T = o.T_world_cam
        assert np.isfinite(T).all()
        np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-6)
        assert o.timings_ms['inference'] > 0


def test_valid_points_lie_in_front_of_the_camera(clip_run):
    # By construction: the pipeline re-gates `valid` on z > 0 after the PnP pose (before
    # that, 13-59 % of tesla's valid pixels had z <= 0 with the shipped model).
    _, _, outputs = clip_run
    for o in outputs[1:]:
        assert np.all(o.points_cam[o.valid][:, 2] > 0)


def test_estimated_intrinsics_are_a_centred_pinhole(clip_run, native_size):
    _, _, outputs = clip_run
    H, W = native_size
    for o in outputs[1:]:
        assert o.intrinsics_estimated
        assert o.K[0, 0] == o.K[1, 1] and o.K[0, 1] == 0
        assert (o.K[0, 2], o.K[1, 2]) == ((W - 1) / 2, (H - 1) / 2)


def test_estimated_focal_is_plausible(clip_run, native_size):
    # By construction: fits outside the configured range are rejected in favour of the
    # running median or the 60-degree prior (tesla's raw fits are ~0.0003 W with the shipped
    # model, horse's -0.03 W).
    from pointmap_ros.pipeline import PipelineConfig
    _, _, outputs = clip_run
    cfg = PipelineConfig()
    side = max(native_size)
    for o in outputs[1:]:
        f = o.K[0, 0]
        assert cfg.focal_min_rel * side <= f <= cfg.focal_max_rel * side, \
            f'estimated focal {f:.4g} px for a {native_size[1]}x{native_size[0]} image'


# -- the command-line tool -------------------------------------------------------------------
def test_run_video_cli_writes_figure_and_summary(videos, tmp_path, native_size):
    from pointmap_ros.tools.run_video import main
    out = tmp_path / 'out'
    rc = main([str(videos / 'pstudio.mp4'), '--backend', 'torch', '--out', str(out),
               '--max-frames', '3', '--threads', '1', '--no-progress'])
    assert rc == 0
    png = out / 'pstudio.png'
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert cv2.imread(str(png)).shape[0] > 100
    summary = json.loads((out / 'pstudio.json').read_text())
    assert summary['frames_decoded'] == 3 and summary['frames_output'] == 2
    assert summary['frames_dropped'] == {}
    assert summary['model_resolution'] == list(native_size)
    assert summary['container'] == {'fps': 1.0, 'frame_count': 12, 'width': 640, 'height': 360}
    assert summary['ms_per_frame']['inference'] > 0 and summary['ms_per_frame']['decode'] > 0
    assert 0 < summary['finite_fraction'] <= 1
    assert summary['intrinsics_estimated'] is True
    assert summary['focal_px'] == pytest.approx(summary['focal_over_width'] * native_size[1],
                                                rel=1e-2)
    assert summary['num_tracks'] >= 0


def test_run_video_cli_reports_bad_inputs(tmp_path, capsys):
    from pointmap_ros.tools.run_video import main
    fake = tmp_path / 'fake.mp4'
    fake.write_text('not a video')
    rc = main([str(fake), '--out', str(tmp_path / 'o'), '--no-progress'])
    assert rc == 1
    assert 'cannot open' in capsys.readouterr().err
    assert not (tmp_path / 'o' / 'fake.json').exists()


def test_run_video_cli_reports_an_unusable_model(tmp_path, capsys):
    from pointmap_ros.tools.run_video import main
    rc = main([str(tmp_path / 'x.mp4'), '--checkpoint', str(tmp_path / 'none.safetensors'),
               '--out', str(tmp_path)])
    assert rc == 2
    assert 'cannot build the torch engine' in capsys.readouterr().err
