"""The exact 2D correspondences of a generated scene, as a pipeline flow source.

With the oracle's exact same-time maps and this flow in place of DIS, the correspondence
stage has perfect inputs: what it outputs must then match what the oracle's exact four maps
give (tests), and the gap to DIS-based runs is the optical flow's share of the error.

Pixel u of image i sees material point x at t_i; at t_j that point is at ``P_i(t_j)(u)`` (in
camera i's frame), which camera j sees at ``pi(K T_j_i P_i(t_j)(u))``. It is visible there
only if image j's own surface at that pixel is that point: its depth along camera j must
match (relative tolerance ``visibility_rel``), else it is occluded (invalid).
"""

from __future__ import annotations

import numpy as np

from pointmap_ros.data.scenes import SceneGenerator
from pointmap_ros.geometry.camera import pixel_grid, project
from pointmap_ros.geometry.transforms import se3_apply, se3_inverse
from pointmap_ros.pipeline.correspondence import PixelFlow
from pointmap_ros.tracking.window import WindowFrame

__all__ = ['GroundTruthFlow']


def _visible_flow(points_in_target: np.ndarray, target_depth: np.ndarray, K: np.ndarray,
                  valid: np.ndarray, visibility_rel: float) -> tuple[np.ndarray, np.ndarray]:
    """(flow ``[H, W, 2]`` float32, visible ``[H, W]`` bool) of points given in the target
    camera's frame, against the target image's depth ``[H, W]`` (0 = no surface)."""
    H, W = target_depth.shape
    grid = pixel_grid(H, W)
    target = project(points_in_target, K)
    flow = (target - grid).astype(np.float32)
    cols = np.rint(target[..., 0])
    rows = np.rint(target[..., 1])
    inside = valid & (cols >= 0) & (cols <= W - 1) & (rows >= 0) & (rows <= H - 1)
    seen = np.zeros((H, W), np.float64)
    seen[inside] = target_depth[rows[inside].astype(int), cols[inside].astype(int)]
    z = points_in_target[..., 2]
    visible = inside & (np.abs(seen - z) <= visibility_rel * np.abs(z))
    return np.where(visible[..., None], flow, np.float32(0)), visible


class GroundTruthFlow:
    """A :class:`~pointmap_ros.pipeline.correspondence.FlowSource` for one generated scene.

    Args:
        generator: the scene (its resolution must be the pipeline's model resolution).
        visibility_rel: depth agreement that counts a point as visible in the other image.

    Frames are identified by their stamp (frame index = ``round(stamp * fps)``), like the
    oracle engine.
    """

    def __init__(self, generator: SceneGenerator, visibility_rel: float = 0.02):
        self.generator = generator
        self.visibility_rel = float(visibility_rel)

    def pair_flow(self, ref: WindowFrame, current: WindowFrame,
                  size: tuple[int, int]) -> PixelFlow:
        gen = self.generator
        if (gen.config.height, gen.config.width) != tuple(size):
            raise ValueError(f'scene is {gen.config.height}x{gen.config.width}, the pipeline '
                             f'runs at {size[0]}x{size[1]}')
        fps = gen.config.fps
        i, j = int(round(ref.stamp * fps)), int(round(current.stamp * fps))
        truth = gen.pair_ground_truth(i, j, dtype=np.float64)
        T_j_i = se3_inverse(truth.T_cami_camj)
        depth_i, depth_j = gen.render(i).depth, gen.render(j).depth
        forward, forward_valid = _visible_flow(
            se3_apply(T_j_i, truth.maps.pts_i_tj.astype(np.float64)), depth_j, gen.K,
            truth.valid_i, self.visibility_rel)
        backward, backward_valid = _visible_flow(
            truth.maps.pts_j_ti.astype(np.float64), depth_i, gen.K, truth.valid_j,
            self.visibility_rel)
        return PixelFlow(forward, backward, forward_valid, backward_valid)
