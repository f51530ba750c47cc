"""Textures for the procedural scenes: seeded procedural patterns and shipped sample images.

A texture is a ``[S, S, 3]`` float32 RGB array in [0, 1] looked up with texture coordinates
measured in tiles and repeated with mirroring (so tiles meet without seams). Surfaces compute
the coordinates from *canonical* (rest-frame) points only, which makes every surface colour a
pure function of the material point: textures move with the objects and stay consistent
across frames.

Photographs come from the sample data that matplotlib installs (``mpl-data/sample_data``); they
are read from disk, never downloaded. Where they are missing the bank falls back to procedural
textures (the scene is then still deterministic for a given seed on that machine).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from pathlib import Path

import numpy as np

__all__ = ['TEXTURE_SIZE', 'sample', 'fbm', 'checker', 'stripes', 'uniform', 'sample_photos',
           'TextureBank']

logger = logging.getLogger(__name__)

TEXTURE_SIZE = 256

_PHOTO_FILES = ('grace_hopper.jpg', 'Minduka_Present_Blue_Pack.png')
_DEM_FILE = 'jacksboro_fault_dem.npz'


def sample(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Nearest-texel lookup with mirrored repeat.

    Args:
        texture: ``[S, S, 3]`` float32.
        uv: ``[N, 2]`` coordinates in tiles (1.0 = one texture width).

    Returns:
        ``[N, 3]`` float32 colours.
    """
    size = texture.shape[0]
    # Mirrored repeat: a triangle wave of period 2 tiles maps any coordinate into [0, 1];
    # scaling by slightly less than `size` keeps 1.0 inside the last texel.
    # (float32 and floor instead of np.mod: several times faster; texel choice only.)
    uv = uv.astype(np.float32)
    folded = 1.0 - np.abs(uv - 2.0 * np.floor(0.5 * uv) - 1.0)
    idx = (folded * (size - 1e-2)).astype(np.intp)
    return np.take(texture.reshape(-1, 3), idx[:, 1] * size + idx[:, 0], axis=0)


def _spectral_noise(rng: np.random.Generator, size: int, beta: float) -> np.ndarray:
    """Periodic 1/f^beta noise ``[size, size]`` normalised to [0, 1] (seamless by FFT)."""
    freq = np.fft.fftfreq(size)
    radius = np.hypot(freq[:, None], freq[None, :])
    radius[0, 0] = 1.0
    spectrum = np.fft.fft2(rng.standard_normal((size, size))) / radius ** beta
    spectrum[0, 0] = 0.0
    field = np.real(np.fft.ifft2(spectrum))
    field -= field.min()
    return field / max(float(field.max()), 1e-12)


def _palette(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random saturated-but-not-garish colours ``[n, 3]`` in [0.1, 0.95]."""
    return rng.uniform(0.1, 0.95, size=(n, 3))


def _colourise(field: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Map a scalar field in [0, 1] through a piecewise-linear palette ``[n, 3]``."""
    positions = np.linspace(0.0, 1.0, len(colours))
    channels = [np.interp(field, positions, colours[:, c]) for c in range(3)]
    return np.stack(channels, axis=-1).astype(np.float32)


def fbm(rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """Fractal (fBm-like) noise texture in a random three-colour palette."""
    return _colourise(_spectral_noise(rng, size, beta=rng.uniform(1.2, 2.0)), _palette(rng, 3))


def checker(rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """Checkerboard of two random colours, modulated by fine noise so cells are not flat."""
    cells = int(rng.integers(4, 10))
    grid = np.arange(size) * cells // size
    board = ((grid[:, None] + grid[None, :]) % 2).astype(np.float64)
    colours = _palette(rng, 2)
    tex = colours[0] * (1.0 - board[..., None]) + colours[1] * board[..., None]
    grain = 0.75 + 0.25 * _spectral_noise(rng, size, beta=1.0)[..., None]
    return (tex * grain).astype(np.float32)


def stripes(rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """Soft stripes at a random angle over a noise gradient."""
    angle = rng.uniform(0.0, np.pi)
    count = int(rng.integers(3, 9))
    y, x = np.mgrid[0:size, 0:size] / size
    phase = 2.0 * np.pi * count * (np.cos(angle) * x + np.sin(angle) * y)
    field = 0.5 + 0.35 * np.sin(phase) + 0.15 * _spectral_noise(rng, size, beta=1.5)
    return _colourise(np.clip(field, 0.0, 1.0), _palette(rng, 3))


def uniform(texture: np.ndarray) -> np.ndarray:
    """``texture`` with every texel its mean colour: an untextured (plain-coloured) surface,
    whose shading alone still varies with the surface normal."""
    mean = texture.reshape(-1, texture.shape[-1]).mean(axis=0, dtype=np.float64)
    return np.broadcast_to(mean.astype(texture.dtype), texture.shape).copy()


def _sample_data_dir() -> Path | None:
    spec = importlib.util.find_spec('matplotlib')
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / 'mpl-data' / 'sample_data'
    return path if path.is_dir() else None


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and nearest-resize to ``[size, size, C]``."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[top:top + side, left:left + side]
    idx = np.arange(size) * side // size
    return square[idx][:, idx]


@functools.lru_cache(maxsize=1)
def sample_photos(size: int = TEXTURE_SIZE) -> tuple[np.ndarray, ...]:
    """Textures made from the images matplotlib ships (photos + a coloured terrain model).

    Returns an empty tuple when matplotlib's sample data or Pillow is not installed.
    """
    folder = _sample_data_dir()
    if folder is None:
        logger.info('matplotlib sample data not found; using procedural textures only')
        return ()
    try:
        from PIL import Image
    except ImportError:
        logger.info('Pillow not installed; using procedural textures only')
        return ()
    photos = []
    for name in _PHOTO_FILES:
        if (folder / name).is_file():
            with Image.open(folder / name) as img:
                rgb = np.asarray(img.convert('RGB'), dtype=np.float32) / 255.0
            photos.append(_resize(rgb, size))
    if (folder / _DEM_FILE).is_file():
        elevation = np.load(folder / _DEM_FILE)['elevation'].astype(np.float64)
        elevation = (elevation - elevation.min()) / max(np.ptp(elevation), 1e-12)
        terrain = np.array([[0.18, 0.35, 0.15], [0.55, 0.5, 0.3], [0.75, 0.7, 0.6],
                            [0.95, 0.95, 0.95]])
        photos.append(_resize(_colourise(elevation, terrain), size))
    return tuple(np.ascontiguousarray(p, dtype=np.float32) for p in photos)


class TextureBank:
    """A seeded, deterministic set of textures handed out to the scene's surfaces.

    Args:
        rng: generator the procedural textures are drawn from (consumed in a fixed order).
        num_procedural: how many procedural textures to create.
        use_photos: include the shipped sample images when they are on disk.
    """

    def __init__(self, rng: np.random.Generator, num_procedural: int = 8,
                 use_photos: bool = True):
        makers = (fbm, checker, stripes)
        self.procedural = [makers[k % len(makers)](rng) for k in range(num_procedural)]
        self.photos = list(sample_photos()) if use_photos else []

    def procedural_texture(self, index: int) -> np.ndarray:
        return self.procedural[index % len(self.procedural)]

    def photo_or_procedural(self, index: int) -> np.ndarray:
        """The ``index``-th photo, or a procedural texture when no photos are available."""
        if self.photos:
            return self.photos[index % len(self.photos)]
        return self.procedural_texture(index)
