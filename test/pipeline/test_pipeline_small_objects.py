"""Small objects end to end on exact maps (the demo scene, four-map oracle).

Objects under ``min_instance_frac``: the demo scene's objects are made "small" by raising it
above the largest one's area in every frame. With ``small_birth_frac`` 1 no object may be born;
with 0.5 the objects that reach half the size and move clearly are tracked, every published
track lies on a moving object, and the motion mask is the same as without small births until
the first track born small continues (the mask stages never see a small instance).

Blobs under ``min_region_frac``: a tracked object's blob stays in the motion mask below the
small-region minimum, and no other does.
"""

import dataclasses

import cv2
import numpy as np
import pytest

from pointmap_ros.data.scenes import SceneGenerator
from pointmap_ros.engines.oracle_engine import OracleEngine
from pointmap_ros.pipeline import DynamicReconPipeline, FrameInput, PipelineConfig
from pointmap_ros.tools.noise_study import EXACT_CONFIG, demo_scene

HEIGHT, WIDTH, FRAMES = 96, 128, 12


def _run(config: PipelineConfig, num_frames: int = FRAMES):
    scene = demo_scene(height=HEIGHT, width=WIDTH, num_frames=num_frames)
    gen = SceneGenerator(scene, seed=0)
    pipeline = DynamicReconPipeline(OracleEngine.from_scene(scene, seed=0), config)
    frames, outputs = [], []
    for t in range(num_frames):
        frame = gen.render(t)
        output = pipeline.process(FrameInput(image=frame.rgb, stamp=frame.stamp, K=gen.K))
        if output is not None:
            frames.append(frame)
            outputs.append(output)
    return frames, outputs


@pytest.fixture(scope='module')
def runs():
    scene = demo_scene(height=HEIGHT, width=WIDTH, num_frames=FRAMES)
    gen = SceneGenerator(scene, seed=0)
    largest = max(np.bincount(gen.render(t).instance_ids.ravel())[1:].max()
                  for t in range(FRAMES))
    # Every object under the full size; the largest keeps over half of it in some frames.
    min_instance_frac = 1.25 * largest / (HEIGHT * WIDTH)
    config = PipelineConfig(**EXACT_CONFIG, min_instance_frac=min_instance_frac)
    return {frac: _run(dataclasses.replace(config, small_birth_frac=frac))
            for frac in (1.0, 0.5)}


def test_no_object_is_born_under_the_full_size_without_small_births(runs):
    _, outputs = runs[1.0]
    assert all(not output.objects for output in outputs)


def test_clearly_moving_small_objects_are_tracked_and_only_on_moving_objects(runs):
    frames, outputs = runs[0.5]
    published = [output for output in outputs if output.objects]
    assert len(published) >= FRAMES // 2
    for frame, output in zip(frames, outputs):
        for obj in output.objects:
            pixels = output.instance_ids == obj.track_id
            if obj.point_count == 0:
                continue  # coasting: no pixels this frame
            truth = frame.instance_ids[pixels]
            assert np.mean(truth > 0) > 0.9, 'a published track on static structure'


def test_the_mask_is_unchanged_until_a_small_track_continues(runs):
    (_, without), (_, with_small) = runs[1.0], runs[0.5]
    first = next(index for index, output in enumerate(with_small) if output.objects)
    for index in range(first + 1):
        np.testing.assert_array_equal(with_small[index].motion_mask,
                                      without[index].motion_mask)


def test_a_tracked_object_keeps_its_blob_under_the_small_region_minimum():
    """At 1 % of the image (123 pixels) the demo's three small objects (90-190 pixels) are
    often under the minimum. Blobs under it appear in the mask (only through the rule:
    without it there are none), and every one lies on a moving object."""
    min_region_frac = 0.01
    frames, outputs = _run(PipelineConfig(**EXACT_CONFIG, min_region_frac=min_region_frac),
                           num_frames=24)
    minimum = min_region_frac * HEIGHT * WIDTH
    on_objects = []
    for frame, output in zip(frames, outputs):
        count, blobs, stats, _ = cv2.connectedComponentsWithStats(
            output.motion_mask.view(np.uint8), connectivity=8)
        for blob in range(1, count):
            if stats[blob, cv2.CC_STAT_AREA] < minimum:
                on_objects.append(np.mean(frame.instance_ids[blobs == blob] > 0) > 0.5)
    assert len(on_objects) >= 5 and all(on_objects)
