"""Model configuration: one dataclass, three presets, JSON round trip.

The fields describe the DUSt3R-family asymmetric encoder-decoder (CroCo ViT encoder, two
cross-attending decoders, linear or DPT heads) extended to DPM's four point maps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pointmap_ros.errors import ConfigError

__all__ = ['ModelConfig', 'PRESETS', 'HEAD_TYPES', 'CROSS_TIME_MODES']

HEAD_TYPES = ('linear', 'dpt')
#: How heads 3/4 predict the cross-time maps: directly, or as an offset from heads 1/2.
CROSS_TIME_MODES = ('absolute', 'residual')


@dataclass
class ModelConfig:
    """Sizes of a :class:`~pointmap_ros.model.dpm.DynamicPointMapNet`.

    Attributes:
        patch_size: side of the square patches (pixels); inputs must be multiples of it.
        enc_embed_dim, enc_depth, enc_num_heads: ViT encoder width, blocks, heads.
        dec_embed_dim, dec_depth, dec_num_heads: width, blocks and heads of each decoder.
        mlp_ratio: MLP hidden size as a multiple of the block width.
        head_type: ``'linear'`` (per-patch linear + pixel shuffle) or ``'dpt'``.
        dpt_feature_dim, dpt_last_dim, dpt_layer_dims: DPT widths (official 256 / 128 /
            (96, 192, 384, 768)).
        dpt_hooks: indices into [encoder output, decoder block 1..L] feeding the DPT head;
            None means DUSt3R's ``[0, L*2//4, L*3//4, L]``.
        rope_freq: base frequency of the 2D RoPE ('RoPE100' -> 100).
        num_maps: 4 for DPM (four heads), 2 for a plain DUSt3R/MonST3R pair model.
        img_size: native ``(H, W)`` input resolution (pixels), the default of engines and
            export; the network itself accepts any multiple of ``patch_size``.
        cross_time: ``'absolute'`` (DPM: heads 3/4 regress P_i(t_j), P_j(t_i) like heads 1/2)
            or ``'residual'`` (heads 3/4 regress offsets: ``P_i(t_j) = P_i(t_i) + Δ_i``,
            ``P_j(t_i) = P_j(t_j) + Δ_j``; needs ``num_maps=4``). JSONs written before the
            field existed load as ``'absolute'``.
    """

    patch_size: int = 16
    enc_embed_dim: int = 1024
    enc_depth: int = 24
    enc_num_heads: int = 16
    dec_embed_dim: int = 768
    dec_depth: int = 12
    dec_num_heads: int = 12
    mlp_ratio: float = 4.0
    head_type: str = 'dpt'
    dpt_feature_dim: int = 256
    dpt_last_dim: int = 128
    dpt_layer_dims: tuple[int, int, int, int] = (96, 192, 384, 768)
    dpt_hooks: tuple[int, int, int, int] | None = None
    rope_freq: float = 100.0
    num_maps: int = 4
    img_size: tuple[int, int] = (288, 512)
    cross_time: str = 'absolute'

    def __post_init__(self):
        self.dpt_layer_dims = tuple(int(v) for v in self.dpt_layer_dims)
        if self.dpt_hooks is not None:
            self.dpt_hooks = tuple(int(v) for v in self.dpt_hooks)
        self.img_size = tuple(int(v) for v in self.img_size)
        self.validate()

    @property
    def hooks(self) -> tuple[int, int, int, int]:
        """DPT hook indices actually used (the default formula when ``dpt_hooks`` is None)."""
        if self.dpt_hooks is not None:
            return self.dpt_hooks
        depth = self.dec_depth
        return (0, depth * 2 // 4, depth * 3 // 4, depth)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first inconsistent field."""
        def fail(name, msg):
            raise ConfigError(f'ModelConfig.{name}={getattr(self, name)!r}: {msg}',
                              name=name, value=getattr(self, name))

        for name in ('patch_size', 'enc_embed_dim', 'enc_depth', 'enc_num_heads',
                     'dec_embed_dim', 'dec_depth', 'dec_num_heads'):
            if int(getattr(self, name)) < 1:
                fail(name, 'must be a positive integer')
        for prefix in ('enc', 'dec'):
            dim, heads = getattr(self, f'{prefix}_embed_dim'), getattr(self, f'{prefix}_num_heads')
            # RoPE2D splits each head in a y half and an x half, each rotated in pairs.
            if dim % heads or (dim // heads) % 4:
                fail(f'{prefix}_num_heads', f'{prefix}_embed_dim {dim} must split into heads '
                     'whose size is a multiple of 4 (2D RoPE)')
        if self.head_type not in HEAD_TYPES:
            fail('head_type', f'expected one of {HEAD_TYPES}')
        if self.num_maps not in (2, 4):
            fail('num_maps', 'expected 2 (DUSt3R pair) or 4 (DPM)')
        if self.cross_time not in CROSS_TIME_MODES:
            fail('cross_time', f'expected one of {CROSS_TIME_MODES}')
        if self.cross_time == 'residual' and self.num_maps != 4:
            fail('cross_time', f'residual cross-time heads need num_maps=4, not {self.num_maps}')
        if len(self.dpt_layer_dims) != 4:
            fail('dpt_layer_dims', 'expected 4 widths')
        if self.head_type == 'dpt':
            hooks = self.hooks
            if len(hooks) != 4 or sorted(hooks) != list(hooks) or hooks[-1] > self.dec_depth \
                    or hooks[0] < 0:
                fail('dpt_hooks', f'need 4 increasing indices in [0, dec_depth={self.dec_depth}]')
            if self.dpt_hooks is None and self.dec_depth < 4:
                fail('dec_depth', 'a DPT head needs dec_depth >= 4 for distinct hooks')
        if len(self.img_size) != 2 or any(v <= 0 or v % self.patch_size for v in self.img_size):
            fail('img_size', f'expected (H, W), multiples of patch_size {self.patch_size}')

    # -- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-compatible dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> 'ModelConfig':
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f'unknown ModelConfig fields {unknown}; known: {sorted(names)}',
                              name=unknown[0])
        return cls(**data)

    @classmethod
    def preset(cls, name: str, **overrides) -> 'ModelConfig':
        """A copy of preset ``name`` (``'official'``, ``'small'``, ``'tiny'``) with overrides."""
        if name not in PRESETS:
            raise ConfigError(f'unknown model preset {name!r}; expected one of {sorted(PRESETS)}',
                              name='preset', value=name)
        return cls(**{**PRESETS[name], **overrides})


#: Preset sizes. ``official`` is DUSt3R_ViTLarge_BaseDecoder_512_dpt plus the two DPM heads at
#: DPM's training resolution 512x288; ``small`` targets a robot CPU / embedded GPU; ``tiny`` is
#: for tests (sizes close to the reference vectors' tiny models).
PRESETS: dict[str, dict] = {
    'official': dict(),
    'small': dict(enc_embed_dim=192, enc_depth=6, enc_num_heads=3,
                  dec_embed_dim=128, dec_depth=4, dec_num_heads=2,
                  dpt_feature_dim=32, dpt_last_dim=16, dpt_layer_dims=(16, 32, 64, 128),
                  img_size=(224, 224)),
    'tiny': dict(enc_embed_dim=96, enc_depth=2, enc_num_heads=3,
                 dec_embed_dim=48, dec_depth=4, dec_num_heads=3,
                 dpt_feature_dim=32, dpt_last_dim=16, dpt_layer_dims=(16, 32, 64, 128),
                 img_size=(64, 96)),
}
