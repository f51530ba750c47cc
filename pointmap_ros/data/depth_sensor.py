"""What a real depth camera makes of the scene generator's exact depth: noise, holes, range.

The renderer's depth (data/render.py) is exact to float32. RGB-D sensors are not: their
error grows with depth, they return nothing where the projector's pattern or the stereo
match fails (at silhouettes, where one view sees what the other does not, and on random
pixels), mix foreground and background into "flying pixels" along depth edges, and only
work within a range. :func:`degrade_depth` reproduces those effects, deterministically by
seed, so the depth prior (pipeline/depth_prior.py) is evaluated on the kind of input it
gets from a driver (``pointmap-eval-pipeline --depth``).

Conventions: depth ``[H, W]`` float32 metres of z; no data = 0, as in a 16UC1 image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pointmap_ros.geometry.pointmap import depth_edges

__all__ = ['DepthSensorModel', 'degrade_depth', 'edge_neighbourhood']


@dataclass(frozen=True)
class DepthSensorModel:
    """Parameters of :func:`degrade_depth` (defaults: a typical indoor RGB-D camera).

    Attributes:
        noise_rel: standard deviation of the multiplicative Gaussian depth noise.
        dropout: fraction of all pixels without data (independent, random).
        edge_hole_prob: probability that a pixel at a depth edge has no data.
        flying_prob: probability that a remaining pixel at a depth edge reads a depth
            between the two surfaces (uniformly), a flying pixel.
        edge_rel: depth edges as :func:`~pointmap_ros.geometry.pointmap.depth_edges`
            finds them (a discontinuity, not a slanted plane).
        min_m, max_m: working range; depth outside reads as no data.
    """

    noise_rel: float = 0.01
    dropout: float = 0.02
    edge_hole_prob: float = 0.5
    flying_prob: float = 0.5
    edge_rel: float = 0.05
    min_m: float = 0.2
    max_m: float = 8.0


def edge_neighbourhood(depth: np.ndarray, edge_rel: float
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(edge, nearest, farthest)`` ``[H, W]``: the depth edges
    (:func:`~pointmap_ros.geometry.pointmap.depth_edges`) and the nearest and farthest
    depth of each pixel's 3x3 neighbourhood (pixels without data ignored), between which a
    flying pixel reads."""
    has_data = np.isfinite(depth) & (depth > 0)
    kernel = np.ones((3, 3), np.uint8)
    nearest = cv2.erode(np.where(has_data, depth, np.float32(np.inf)).astype(np.float32),
                        kernel, borderType=cv2.BORDER_REPLICATE)
    farthest = cv2.dilate(np.where(has_data, depth, np.float32(0)).astype(np.float32),
                          kernel, borderType=cv2.BORDER_REPLICATE)
    return depth_edges(depth, edge_rel), nearest, farthest


def degrade_depth(depth: np.ndarray, model: DepthSensorModel = DepthSensorModel(),
                  seed: int = 0) -> np.ndarray:
    """``depth`` as the sensor ``model`` would measure it: ``[H, W]`` float32, 0 = no data.

    In order: edge pixels become holes (``edge_hole_prob``) or flying pixels
    (``flying_prob``, a uniform mix of the nearest and farthest depth around), every depth
    gets multiplicative noise ``1 + noise_rel * N(0, 1)``, random pixels drop out
    (``dropout``) and depth outside ``[min_m, max_m]`` is lost. Same seed, same result.
    """
    rng = np.random.default_rng(seed)
    depth = np.asarray(depth, np.float32)
    has_data = np.isfinite(depth) & (depth > 0)
    out = np.where(has_data, depth, np.float32(0))
    edge, nearest, farthest = edge_neighbourhood(depth, model.edge_rel)
    # One uniform number per pixel decides between a hole, a flying pixel and a good one.
    draw = rng.random(depth.shape)
    hole = edge & (draw < model.edge_hole_prob)
    flying = edge & ~hole & (draw < model.edge_hole_prob
                             + (1 - model.edge_hole_prob) * model.flying_prob)
    mix = rng.random(depth.shape).astype(np.float32)
    out = np.where(flying, nearest + mix * (farthest - nearest), out)
    out = out * (1 + np.float32(model.noise_rel) * rng.standard_normal(depth.shape)
                 .astype(np.float32))
    dropped = rng.random(depth.shape) < model.dropout
    lost = ~has_data | hole | dropped | (out < model.min_m) | (out > model.max_m)
    return np.where(lost, np.float32(0), out).astype(np.float32)
