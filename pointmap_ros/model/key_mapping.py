"""Pure state-dict key remapping: DUSt3R / MonST3R / St4RTrack layouts -> our DPM layout.

No I/O here; :mod:`pointmap_ros.model.checkpoint` reads and writes files. Functions take and
return plain ``{key: tensor}`` dicts and never modify their input.

Layouts (``layout`` argument):

``'dust3r'`` (also MonST3R, same network)
    ``downstream_head1`` = P_i(t_i), ``downstream_head2`` = P_j(t_j) -> kept. A DPM model's
    cross-time heads start as copies: ``downstream_head3 <- head1`` (P_i(t_j) reads decoder i
    like head1), ``downstream_head4 <- head2``.
``'st4rtrack'``
    St4RTrack's head1 is its *tracking* branch, frame-1 pixels at time t_j = P_i(t_j) ->
    ``downstream_head3``; its head2 is the reconstruction branch P_j(t_j) ->
    ``downstream_head2``. Best available init for the rest: ``downstream_head1 <- head1``,
    ``downstream_head4 <- head2``. Needs a 4-map model (a 2-map model's head1 means P_i(t_i)).
``'dpm'``
    Already ours: keys are kept as they are.
"""

from __future__ import annotations

import re

import torch

from pointmap_ros.errors import CheckpointError

__all__ = ['LAYOUTS', 'HEAD_SOURCES', 'tie_dpt_aliases', 'drop_dpt_aliases', 'strip_prefix',
           'fill_second_decoder', 'map_heads', 'dpt_widths_from_state', 'remap_state_dict',
           'summarize_keys']

LAYOUTS = ('dust3r', 'st4rtrack', 'dpm')

_ALIAS_NAMED = re.compile(r'^(.*\.dpt\.scratch\.)layer([1-4])_rn\.weight$')
_ALIAS_LISTED = re.compile(r'^(.*\.dpt\.scratch\.)layer_rn\.([0-3])\.weight$')

# Per layout: our head -> (source head, 'trained' if the source head was trained for that map,
# 'init' if it is only a starting point copied from a related map).
HEAD_SOURCES = {
    'dust3r': {1: (1, 'trained'), 2: (2, 'trained'), 3: (1, 'init'), 4: (2, 'init')},
    'st4rtrack': {1: (1, 'init'), 2: (2, 'trained'), 3: (1, 'trained'), 4: (2, 'init')},
}


def summarize_keys(keys, limit: int = 8) -> str:
    """``'a, b, c (+12 more)'``: a short, sorted listing for error messages."""
    keys = sorted(keys)
    shown = ', '.join(keys[:limit])
    return shown + (f' (+{len(keys) - limit} more)' if len(keys) > limit else '')


def _alias_of(key: str) -> str | None:
    m = _ALIAS_NAMED.match(key)
    if m:
        return f'{m.group(1)}layer_rn.{int(m.group(2)) - 1}.weight'
    m = _ALIAS_LISTED.match(key)
    if m:
        return f'{m.group(1)}layer{int(m.group(2)) + 1}_rn.weight'
    return None


def tie_dpt_aliases(state: dict) -> dict:
    """Make both names of each DPT ``layerN_rn`` conv present and identical.

    The official DPT registers ``scratch.layerN_rn`` also as ``scratch.layer_rn[N-1]``; exports
    may keep only one name. Raises :class:`CheckpointError` if the two names hold different
    tensors (a corrupt or hand-edited file).
    """
    out = dict(state)
    for key, value in state.items():
        alias = _alias_of(key)
        if alias is None:
            continue
        if alias not in out:
            out[alias] = value
        elif out[alias].shape != value.shape or not torch.equal(out[alias], value):
            raise CheckpointError(f'aliased DPT keys {key!r} and {alias!r} hold different '
                                  'tensors; they must be the same convolution',
                                  mismatched=[key, alias])
    return out


def drop_dpt_aliases(state: dict) -> dict:
    """Keep only the ``layerN_rn`` name of each aliased DPT conv (for saving)."""
    return {k: v for k, v in state.items() if not _ALIAS_LISTED.match(k)}


def strip_prefix(state: dict, prefix: str = 'module.') -> dict:
    """Remove a DistributedDataParallel-style prefix when every key carries it."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def fill_second_decoder(state: dict) -> dict:
    """Copy ``dec_blocks.*`` to ``dec_blocks2.*`` when the second decoder is absent.

    CroCo pretraining checkpoints have one decoder; DUSt3R initialises both from it.
    """
    out = dict(state)
    if not any(k.startswith('dec_blocks2.') for k in state):
        for key, value in state.items():
            if key.startswith('dec_blocks.'):
                out['dec_blocks2.' + key[len('dec_blocks.'):]] = value.clone()
    return out


def map_heads(state: dict, layout: str, num_maps: int) -> tuple[dict, dict]:
    """Rename/copy ``downstream_head<k>`` entries from ``layout`` to our head semantics.

    Args:
        state: state dict with the source checkpoint's head numbering.
        layout: one of :data:`LAYOUTS`.
        num_maps: heads of the target model (2 or 4).

    Returns:
        ``(state, provenance)``: a new dict with heads 1..num_maps (copies are independent
        tensors), and ``{'downstream_head3': 'init from source head1', ...}`` saying where each
        head came from (empty for ``'dpm'``).
    """
    if layout not in LAYOUTS:
        raise CheckpointError(f'unknown checkpoint layout {layout!r}; expected one of {LAYOUTS}')
    if layout == 'dpm':
        return dict(state), {}
    if layout == 'st4rtrack' and num_maps != 4:
        raise CheckpointError('a St4RTrack checkpoint predicts P_i(t_j) with head1, which only '
                              f'a 4-map DPM model has; got num_maps={num_maps}')
    heads: dict[int, dict] = {}
    out = {}
    for key, value in state.items():
        m = re.match(r'^downstream_head(\d+)\.(.*)$', key)
        if m:
            heads.setdefault(int(m.group(1)), {})[m.group(2)] = value
        else:
            out[key] = value
    provenance = {}
    for target in range(1, num_maps + 1):
        source, kind = HEAD_SOURCES[layout][target]
        if layout == 'dust3r' and target in heads:
            source, kind = target, 'trained'  # a file that already has this head keeps it
        if source not in heads:
            continue  # strict loading will name the missing keys
        for sub, value in heads[source].items():
            out[f'downstream_head{target}.{sub}'] = value if source == target else value.clone()
        provenance[f'downstream_head{target}'] = f'{kind} from source head{source}'
    # Heads beyond the target model (e.g. a 4-map file into a 2-map model) stay visible, so
    # strict loading reports them as unexpected instead of dropping them silently.
    for source, params in heads.items():
        if source > num_maps:
            out.update({f'downstream_head{source}.{sub}': v for sub, v in params.items()})
    return out, provenance


def dpt_widths_from_state(state: dict) -> dict:
    """DPT widths read off ``downstream_head1``'s tensor shapes, as ModelConfig fields.

    The official constructor string does not carry them (they are fixed in the reference's
    head factory), but a checkpoint with non-default widths still describes them exactly.
    Returns an empty dict when the state has no DPT head 1.
    """
    prefix = 'downstream_head1.dpt.'
    try:
        return {
            'dpt_feature_dim': int(state[prefix + 'scratch.refinenet1.out_conv.weight'].shape[0]),
            'dpt_last_dim': int(state[prefix + 'head.2.weight'].shape[0]),
            'dpt_layer_dims': tuple(int(state[f'{prefix}act_postprocess.{i}.0.weight'].shape[0])
                                    for i in range(4)),
        }
    except KeyError:
        return {}


def remap_state_dict(state: dict, layout: str, num_maps: int) -> tuple[dict, dict]:
    """Full conversion of a source state dict into our key layout.

    Strips a ``module.`` prefix, fills a missing second decoder, maps the heads and ties the
    DPT aliases. ``mask_token`` is kept (unused, but in the official layout).

    Returns:
        ``(state, provenance)`` as :func:`map_heads`.
    """
    state = strip_prefix(state)
    state = fill_second_decoder(state)
    state, provenance = map_heads(state, layout, num_maps)
    return tie_dpt_aliases(state), provenance
