"""The OpenCV-backed segmentation steps equal their SciPy reference definitions."""

import numpy as np
import pytest
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pointmap_ros.tracking.segmentation import (
    pair_motion, remove_small_regions, segment_instances, smooth_flow)


def _reference_components(mask, points, flow, jump_rel, flow_jump_rel, flow_floor):
    """Sizes of the link graph's components, by an explicit sparse graph."""
    H, W = mask.shape
    idx = np.full((H, W), -1)
    ys, xs = np.nonzero(mask)
    idx[ys, xs] = np.arange(len(ys))
    rows, cols = [], []
    for dy, dx in ((0, 1), (1, 0)):
        a = mask[:H - dy, :W - dx] & mask[dy:, dx:]
        pa, pb = points[:H - dy, :W - dx][a], points[dy:, dx:][a]
        fa, fb = flow[:H - dy, :W - dx][a], flow[dy:, dx:][a]
        z = np.minimum(np.abs(pa[:, 2]), np.abs(pb[:, 2]))
        fmag = 0.5 * (np.linalg.norm(fa, axis=1) + np.linalg.norm(fb, axis=1))
        keep = ((np.linalg.norm(pa - pb, axis=1) < jump_rel * z)
                & (np.linalg.norm(fa - fb, axis=1) < np.maximum(flow_floor, flow_jump_rel * fmag)))
        rows.append(idx[:H - dy, :W - dx][a][keep])
        cols.append(idx[dy:, dx:][a][keep])
    r, c = np.concatenate(rows), np.concatenate(cols)
    n = len(ys)
    _, comp = connected_components(coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n)),
                                   directed=False)
    return comp, ys, xs


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_doubled_grid_labelling_equals_graph_components(seed):
    rng = np.random.default_rng(seed)
    H, W = 30, 41
    mask = rng.random((H, W)) < 0.7
    points = np.dstack([rng.normal(size=(H, W)), rng.normal(size=(H, W)),
                        rng.choice([2.0, 2.05, 3.0], size=(H, W))])
    flow = rng.choice([0.0, 0.1], size=(H, W, 1)) * np.ones(3)
    labels, n = segment_instances(mask, points, flow, 0.05, 0.5, 0.01, 1)
    comp, ys, xs = _reference_components(mask, points, flow, 0.05, 0.5, 0.01)
    assert n == comp.max() + 1
    # Same partition: a one-to-one map between reference components and labels.
    pairs = set(zip(comp.tolist(), labels[ys, xs].tolist()))
    assert len(pairs) == n == len({p[1] for p in pairs})
    sizes = np.bincount(labels[ys, xs])[1:]
    assert np.all(np.diff(sizes) <= 0)  # largest first


def test_smooth_flow_and_erosion_match_scipy():
    rng = np.random.default_rng(5)
    H, W = 37, 53
    flow = rng.normal(size=(H, W, 3)).astype(np.float32)
    valid = rng.random((H, W)) > 0.3
    flow[~valid & (rng.random((H, W)) > 0.5)] = np.nan  # invalid NaNs must not spread
    den = ndimage.uniform_filter(valid.astype(np.float32), 5, mode='nearest')
    ref = np.stack([ndimage.uniform_filter(np.where(valid, flow[..., c], 0).astype(np.float32),
                                           5, mode='nearest') for c in range(3)], -1)
    ref /= np.maximum(den, 1e-6)[..., None]
    np.testing.assert_allclose(smooth_flow(flow, valid, 2), ref, atol=1e-5)
    # The noisy-path decision erodes with ndimage's semantics (cross, outside = False).
    noisy = np.where(valid[..., None], flow, 0.0) * 0.01
    noisy[5:25, 5:30] += 1.0
    pm = pair_motion(noisy, np.ones((H, W), bool), 5.0, 0.1, 0.0, 0.0, 4.0, 2)
    sm = smooth_flow(noisy, np.ones((H, W), bool), 2)
    raw = np.linalg.norm(sm, axis=-1) > pm.threshold
    np.testing.assert_array_equal(pm.moving, ndimage.binary_erosion(raw, iterations=1))


def test_small_region_removal_matches_scipy():
    rng = np.random.default_rng(6)
    mask = ndimage.binary_opening(rng.random((60, 80)) < 0.45)
    out = remove_small_regions(mask, 12)
    ref = mask.copy()
    for value in (True, False):
        lab, n = ndimage.label(ref == value, structure=np.ones((3, 3)))
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        small = sizes < 12
        small[0] = False
        ref[small[lab]] = not value
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize('kept_pixels, survives', [(4, True), (3, False), (0, False)])
def test_small_blobs_mostly_on_keep_survive(kept_pixels, survives):
    """A blob under the size limit stays when ``keep`` keeps most of its pixels (more than
    half); holes are filled whatever it says."""
    mask = np.zeros((20, 20), bool)
    mask[2:4, 2:5] = True        # a 6-pixel blob
    mask[8:16, 8:16] = True      # a large blob with a 1-pixel hole
    mask[11, 11] = False
    keep = np.zeros_like(mask)
    keep.ravel()[np.flatnonzero(mask[:4])[:kept_pixels]] = True
    keep[11, 11] = True
    asked = []

    def keeps(candidates):
        asked.append(candidates.copy())
        return keep

    out = remove_small_regions(mask, 12, keeps)
    # Asked once, about the small blob's pixels only.
    assert len(asked) == 1 and np.array_equal(asked[0], mask & (np.arange(20) < 4)[:, None])
    assert out[2:4, 2:5].all() == survives and out[2:4, 2:5].any() == survives
    assert out[8:16, 8:16].all()
