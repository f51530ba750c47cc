"""Read the model description of official DUSt3R-family checkpoints without executing it.

Official ``.pth`` files store the network as a Python constructor call in ``args.model``, e.g.
``"AsymmetricCroCo3DStereo(pos_embed='RoPE100', img_size=(512, 512), head_type='dpt', ...)"``;
the reference loader ``eval``\\ s it. Here it is parsed with :mod:`ast` and only literal keyword
values (numbers, strings, tuples, ``inf``) are accepted, then turned into a
:class:`~pointmap_ros.model.config.ModelConfig`.
"""

from __future__ import annotations

import ast
import logging
import math

from pointmap_ros.errors import CheckpointError
from pointmap_ros.model.config import ModelConfig

__all__ = ['parse_model_string', 'config_from_official_kwargs', 'detect_layout',
           'SUPPORTED_CLASSES']

logger = logging.getLogger(__name__)

SUPPORTED_CLASSES = ('AsymmetricCroCo3DStereo',)

_NAMES = {'inf': math.inf, 'nan': math.nan, 'True': True, 'False': False, 'None': None}

# Constructor defaults of CroCoNet / AsymmetricCroCo3DStereo for arguments a string may omit.
_DEFAULTS = dict(img_size=224, patch_size=16, enc_embed_dim=768, enc_depth=12,
                 enc_num_heads=12, dec_embed_dim=512, dec_depth=8, dec_num_heads=16,
                 mlp_ratio=4, norm_im2_in_dec=True, pos_embed='cosine', output_mode='pts3d',
                 head_type='linear', depth_mode=('exp', -math.inf, math.inf),
                 conf_mode=('exp', 1, math.inf))

# Arguments that only matter for training or for the reference's input handling.
_IGNORED = {'freeze', 'landscape_only', 'patch_embed_cls', 'mask_ratio', 'random_init',
            'random_init_lr_scale', 'head1_pretrained_path', 'rope_mode', 'norm_layer'}

# St4RTrack's constructor and training script add these (model kwargs / argparse fields).
_ST4R_KWARGS = {'head_type1', 'head1_pretrained_path', 'arch_mode', 'rope_mode'}
_ST4R_ARGS = {'track_eval_freq', 'trackEval_data_root', 'hf_variant'}


def _literal(node: ast.AST, name: str):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool,
                                                                  type(None))):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_literal(elt, name) for elt in node.elts)
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand, name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    raise CheckpointError(f'model constructor argument {name}= is not a literal value '
                          f'({ast.unparse(node)!r}); refusing to evaluate it')


def parse_model_string(text: str) -> tuple[str, dict]:
    """Parse ``"ClassName(key=literal, ...)"`` without evaluating it.

    Returns:
        ``(class_name, kwargs)``; tuples/lists become tuples, ``inf`` becomes ``math.inf``.

    Raises:
        CheckpointError: not a single call with literal keyword arguments.
    """
    short = text if len(text) <= 120 else text[:117] + '...'
    try:
        tree = ast.parse(text.strip(), mode='eval')
    except SyntaxError as exc:
        raise CheckpointError(f'cannot parse model constructor string {short!r}: {exc.msg}'
                              ) from exc
    call = tree.body
    if not isinstance(call, ast.Call) or not isinstance(call.func, (ast.Name, ast.Attribute)):
        raise CheckpointError(f'model constructor string {short!r} is not a call like '
                              "'AsymmetricCroCo3DStereo(...)'")
    if call.args or any(kw.arg is None for kw in call.keywords):
        raise CheckpointError(f'model constructor string {short!r} has positional or ** '
                              'arguments; only keyword=literal arguments are supported')
    name = call.func.id if isinstance(call.func, ast.Name) else call.func.attr
    return name, {kw.arg: _literal(kw.value, kw.arg) for kw in call.keywords}


def _unsupported(what: str) -> CheckpointError:
    return CheckpointError(f'unsupported checkpoint architecture: {what}')


def config_from_official_kwargs(class_name: str, kwargs: dict, *, num_maps: int = 4,
                                img_size: tuple[int, int] | None = None) -> ModelConfig:
    """Turn parsed constructor arguments into a :class:`ModelConfig`.

    Args:
        class_name: constructor name; must be in :data:`SUPPORTED_CLASSES`.
        kwargs: keyword arguments from :func:`parse_model_string` (or a hub ``config.json``).
        num_maps: heads of the model to build (4 = DPM, 2 = plain pair model).
        img_size: native ``(H, W)``; default taken from ``img_size`` read as DUSt3R's
            ``(W, H)`` resolution convention (it has no effect on the weights).

    Raises:
        CheckpointError: the arguments describe a network this package does not implement
            (other position embedding, output mode, post-processing or head mix).
    """
    if class_name not in SUPPORTED_CLASSES:
        raise _unsupported(f'model class {class_name!r} (supported: {SUPPORTED_CLASSES})')
    args = {**_DEFAULTS, **kwargs}
    pos = str(args['pos_embed'])
    if not pos.startswith('RoPE'):
        raise _unsupported(f"pos_embed={pos!r} (only 'RoPE<freq>' is implemented)")
    try:
        rope_freq = float(pos[4:])
    except ValueError as exc:
        raise _unsupported(f'pos_embed={pos!r}') from exc
    if args['output_mode'] != 'pts3d':
        raise _unsupported(f"output_mode={args['output_mode']!r} (only 'pts3d')")
    if tuple(args['depth_mode']) != ('exp', -math.inf, math.inf):
        raise _unsupported(f"depth_mode={args['depth_mode']!r} (only ('exp', -inf, inf))")
    conf = tuple(args['conf_mode'])
    if len(conf) != 3 or conf[0] != 'exp' or conf[1] != 1 or conf[2] != math.inf:
        raise _unsupported(f"conf_mode={args['conf_mode']!r} (only ('exp', 1, inf))")
    if not args['norm_im2_in_dec']:
        raise _unsupported('norm_im2_in_dec=False (decoder without norm_y)')
    if args.get('arch_mode', 'VanillaDust3r') != 'VanillaDust3r':
        raise _unsupported(f"arch_mode={args['arch_mode']!r} (only 'VanillaDust3r')")
    head_type = args['head_type']
    if 'head_type1' in args and args['head_type1'] != head_type:
        raise _unsupported(f"head_type1={args['head_type1']!r} differs from "
                           f'head_type={head_type!r}; all heads must share one type')
    unknown = sorted(set(kwargs) - set(_DEFAULTS) - _IGNORED - _ST4R_KWARGS)
    if unknown:
        logger.warning('ignoring unknown model constructor arguments %s', unknown)
    if img_size is None:
        size = args['img_size']
        size = (size, size) if isinstance(size, int) else tuple(size)
        img_size = (int(size[1]), int(size[0]))
    try:
        return ModelConfig(
            patch_size=int(args['patch_size']), enc_embed_dim=int(args['enc_embed_dim']),
            enc_depth=int(args['enc_depth']), enc_num_heads=int(args['enc_num_heads']),
            dec_embed_dim=int(args['dec_embed_dim']), dec_depth=int(args['dec_depth']),
            dec_num_heads=int(args['dec_num_heads']), mlp_ratio=float(args['mlp_ratio']),
            head_type=head_type, rope_freq=rope_freq, num_maps=num_maps,
            img_size=tuple(img_size))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f'model constructor arguments do not form a valid '
                              f'configuration: {exc}') from exc


def detect_layout(kwargs: dict, arg_fields=()) -> str:
    """``'st4rtrack'`` when the constructor or training arguments are St4RTrack's, else
    ``'dust3r'`` (DUSt3R and MonST3R share one layout)."""
    if set(kwargs) & _ST4R_KWARGS or set(arg_fields) & _ST4R_ARGS:
        return 'st4rtrack'
    return 'dust3r'
