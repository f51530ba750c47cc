"""Checkpoint files: our safetensors + JSON format, and one-time conversion of official ones.

Our format is two files side by side: ``<stem>.safetensors`` (the state dict, each DPT alias
stored once) and ``<stem>.json`` (config, provenance, hashes). Loading them never unpickles
anything.

Official DUSt3R / MonST3R / St4RTrack ``.pth`` files are pickles holding ``{'model':
state_dict, 'args': argparse.Namespace, ...}``. :func:`read_official_checkpoint` loads them with
``torch.load(weights_only=True)``, allowing only ``argparse.Namespace``; only an explicit
``trust_pickle=True`` (which executes code from the file) falls back to a full unpickle.
Hugging Face hub exports (``model.safetensors`` + ``config.json`` of constructor arguments)
need no pickle at all. :func:`convert_checkpoint` turns either into our format once.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pointmap_ros.errors import CheckpointError, ConfigError
from pointmap_ros.model.config import ModelConfig
from pointmap_ros.model.dpm import DynamicPointMapNet
from pointmap_ros.model.key_mapping import (LAYOUTS, dpt_widths_from_state, drop_dpt_aliases,
                                            remap_state_dict, summarize_keys, tie_dpt_aliases)
from pointmap_ros.model.official_config import (config_from_official_kwargs, detect_layout,
                                                parse_model_string)

__all__ = ['FORMAT', 'FORMAT_VERSION', 'OfficialCheckpoint', 'checkpoint_paths',
           'save_checkpoint', 'load_checkpoint', 'read_checkpoint_meta', 'load_state_dict_checked',
           'state_dict_sha256', 'read_official_checkpoint', 'convert_checkpoint',
           'cross_time_heads', 'record_cross_time_validation']

logger = logging.getLogger(__name__)

FORMAT = 'pointmap_ros.dpm'
FORMAT_VERSION = 1


def checkpoint_paths(path) -> tuple[Path, Path]:
    """``(<stem>.safetensors, <stem>.json)`` for a stem or either file's path."""
    path = Path(path)
    if path.suffix in ('.safetensors', '.json'):
        path = path.with_suffix('')
    return path.with_name(path.name + '.safetensors'), path.with_name(path.name + '.json')


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def state_dict_sha256(model_or_state) -> str:
    """Content hash of a model's weights: names, dtypes, shapes and bytes, aliases once.

    Independent of file format and key order, so a converted, saved and reloaded model keeps
    its hash.
    """
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) \
        else model_or_state
    digest = hashlib.sha256()
    for key, value in sorted(drop_dpt_aliases(state).items()):
        value = value.detach().to('cpu').contiguous()
        digest.update(f'{key}|{value.dtype}|{tuple(value.shape)}|'.encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# -- our format ------------------------------------------------------------------------------
def save_checkpoint(model: DynamicPointMapNet, path, *, source: dict | None = None) -> Path:
    """Write ``<path>.safetensors`` + ``<path>.json``.

    Args:
        model: the network; its ``config`` goes into the JSON.
        path: stem or either file's path; parent folders are created.
        source: provenance recorded under ``"source"`` (e.g. the converted file and layout).

    Returns:
        Path of the JSON file.
    """
    from safetensors.torch import save_file

    st_path, json_path = checkpoint_paths(path)
    st_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to('cpu').contiguous()
             for k, v in drop_dpt_aliases(model.state_dict()).items()}
    tmp = st_path.with_name(st_path.name + '.tmp')
    save_file(state, str(tmp), metadata={'format': FORMAT, 'format_version': str(FORMAT_VERSION)})
    os.replace(tmp, st_path)
    meta = {
        'format': FORMAT,
        'format_version': FORMAT_VERSION,
        'config': model.config.to_dict(),
        'weights': st_path.name,
        'sha256': _file_sha256(st_path),
        'state_sha256': state_dict_sha256(state),
        'num_parameters': int(sum(v.numel() for v in state.values())),
        'created_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'torch_version': torch.__version__,
        'source': source or {'kind': 'model'},
    }
    tmp = json_path.with_name(json_path.name + '.tmp')
    tmp.write_text(json.dumps(meta, indent=1) + '\n')
    os.replace(tmp, json_path)
    return json_path


def read_checkpoint_meta(path) -> dict:
    """The JSON side of one of our checkpoints, validated (no weights are read)."""
    _, json_path = checkpoint_paths(path)
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f'cannot read checkpoint config {json_path}: {exc}') from exc
    if not isinstance(meta, dict) or meta.get('format') != FORMAT:
        raise CheckpointError(f'{json_path} is not a {FORMAT} checkpoint config')
    if meta.get('format_version') != FORMAT_VERSION:
        raise CheckpointError(f'{json_path} has format_version {meta.get("format_version")}, '
                              f'this package reads version {FORMAT_VERSION}')
    try:
        ModelConfig.from_dict(meta.get('config', {}))
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f'{json_path} holds an invalid model config: {exc}') from exc
    return meta


def cross_time_heads(meta: dict) -> str:
    """What a checkpoint's cross-time heads (3 and 4) can be trusted with.

    ``'initialised'``: only copies of its same-time heads -- the converter records
    ``'init from source head<k>'`` for a DUSt3R / MonST3R file, whose P_i(t_j) therefore
    equals P_i(t_i). ``'validated'``: trained, and ``pointmap-eval --record`` measured their
    scene flow below the zero-flow baseline on held-out pairs, on all pixels and on moving
    ones (:func:`record_cross_time_validation`). ``'trained'``: trained, not (or not
    successfully) validated.
    """
    source = meta.get('source') or {}
    provenance = source.get('heads') or {}
    copied = [str(provenance.get(f'downstream_head{k}', '')).startswith('init')
              for k in (3, 4)]
    if any(copied):
        return 'initialised'
    validation = source.get('cross_time_validation') or {}
    try:
        beats_zero = (float(validation['epe']) < float(validation['epe_zero'])
                      and float(validation['epe_dyn']) < float(validation['epe_dyn_zero']))
    except (KeyError, TypeError, ValueError):
        beats_zero = False
    return 'validated' if beats_zero else 'trained'


def record_cross_time_validation(path, validation: dict) -> Path:
    """Store held-out flow errors of a checkpoint's cross-time heads in its JSON (under
    ``source.cross_time_validation``; the weights and their hashes are untouched).

    Args:
        path: the checkpoint (stem or either file).
        validation: at least ``epe``, ``epe_zero``, ``epe_dyn``, ``epe_dyn_zero`` (mean flow
            end-point errors of the network and of predicting zero flow, on all and on
            moving pixels), plus how they were measured.

    Returns:
        Path of the JSON file.
    """
    _, json_path = checkpoint_paths(path)
    meta = read_checkpoint_meta(path)
    meta['source'] = {**(meta.get('source') or {}), 'cross_time_validation': dict(validation)}
    tmp = json_path.with_name(json_path.name + '.tmp')
    tmp.write_text(json.dumps(meta, indent=1) + '\n')
    os.replace(tmp, json_path)
    return json_path


def load_checkpoint(path, map_location='cpu', *, verify_hash: bool = True) -> DynamicPointMapNet:
    """Build the network from one of our checkpoints (see :func:`save_checkpoint`).

    Args:
        path: stem or either file's path.
        map_location: device for the weights.
        verify_hash: compare the safetensors file with the sha256 in the JSON.

    Returns:
        The model in eval mode; ``model.checkpoint_meta`` holds the JSON metadata.

    Raises:
        CheckpointError: missing/corrupt files, hash mismatch, or keys that do not fit.
    """
    if Path(path).suffix in ('.pth', '.pt'):
        raise CheckpointError(f'{path} is a pickled checkpoint; convert it once with '
                              'pointmap-convert-checkpoint (see docs/model.md)')
    from safetensors.torch import load_file

    st_path, _ = checkpoint_paths(path)
    meta = read_checkpoint_meta(path)
    if verify_hash and os.path.exists(st_path) and _file_sha256(st_path) != meta.get('sha256'):
        raise CheckpointError(f'{st_path} does not match the sha256 recorded in its JSON '
                              '(corrupt, truncated or replaced file)')
    try:
        state = load_file(str(st_path), device='cpu')  # copied into the CPU-built model
    except Exception as exc:  # safetensors raises its own error types for bad files
        raise CheckpointError(f'cannot read weights {st_path}: {exc}') from exc
    model = DynamicPointMapNet(ModelConfig.from_dict(meta['config']))
    load_state_dict_checked(model, state, source=str(st_path))
    model.checkpoint_meta = meta
    return model.to(map_location).eval()


def load_state_dict_checked(model: torch.nn.Module, state: dict, source: str = 'state dict'):
    """Strictly load ``state`` (DPT aliases accepted either way) or raise a clear error.

    Raises:
        CheckpointError: naming missing, unexpected and shape-mismatched keys (lists
            truncated, with counts), and carrying them in its attributes.
    """
    state = tie_dpt_aliases(state)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f'{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}'
                  for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f'{len(missing)} missing keys: {summarize_keys(missing)}')
        if unexpected:
            parts.append(f'{len(unexpected)} unexpected keys: {summarize_keys(unexpected)}')
        if mismatched:
            parts.append(f'{len(mismatched)} shape mismatches: {summarize_keys(mismatched, 4)}')
        raise CheckpointError(f'{source} does not fit the model: ' + '; '.join(parts),
                              missing=missing, unexpected=unexpected, mismatched=mismatched)
    model.load_state_dict(state, strict=True)


# -- official checkpoints ---------------------------------------------------------------------
@dataclass
class OfficialCheckpoint:
    """What an official checkpoint holds: state dict + constructor description."""

    state: dict
    class_name: str
    kwargs: dict
    arg_fields: tuple = ()
    model_string: str = ''
    extra: dict = field(default_factory=dict)


def _torch_load(path: Path, trust_pickle: bool):
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as exc:
        if 'Unsupported global' not in str(exc):
            raise CheckpointError(f'{path} is corrupt or not a torch checkpoint: '
                                  f'{str(exc).splitlines()[0][:200]}') from exc
        if not trust_pickle:
            detail = next((ln for ln in str(exc).splitlines() if 'Unsupported global' in ln),
                          '').strip()
            raise CheckpointError(
                f'{path} contains pickled objects beyond tensors and argparse.Namespace '
                f'({detail}); refusing to unpickle them. If you trust the file, rerun with '
                'trust_pickle=True / --trust-pickle, which executes code from the file') from exc
    except Exception as exc:  # zip/EOF/key errors of a damaged file
        raise CheckpointError(f'{path} is corrupt or not a torch checkpoint: '
                              f'{type(exc).__name__}: {str(exc)[:200]}') from exc
    logger.warning('unpickling %s with weights_only=False (trust_pickle): this executes code '
                   'from the file', path)
    try:
        return torch.load(path, map_location='cpu', weights_only=False)
    except Exception as exc:
        raise CheckpointError(f'{path} is corrupt or not a torch checkpoint: '
                              f'{type(exc).__name__}: {str(exc)[:200]}') from exc


def _read_hub_export(path: Path) -> OfficialCheckpoint:
    from safetensors.torch import load_file

    folder = path if path.is_dir() else path.parent
    st_path = folder / 'model.safetensors' if path.is_dir() else path
    cfg_path = folder / 'config.json'
    try:
        kwargs = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f'hub export {folder} needs a config.json with the constructor '
                              f'arguments: {exc}') from exc
    try:
        state = load_file(str(st_path))
    except Exception as exc:
        raise CheckpointError(f'cannot read weights {st_path}: {exc}') from exc
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return OfficialCheckpoint(state, 'AsymmetricCroCo3DStereo', kwargs)


def read_official_checkpoint(path, *, trust_pickle: bool = False) -> OfficialCheckpoint:
    """Read an official ``.pth`` (or a hub folder / ``.safetensors`` with ``config.json``).

    Raises:
        CheckpointError: unreadable file, pickle refused (without ``trust_pickle``), no
            ``model`` entry, or an unparseable ``args.model`` string.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f'checkpoint {path} does not exist')
    if path.is_dir() or path.suffix == '.safetensors':
        return _read_hub_export(path)
    ckpt = _torch_load(path, trust_pickle)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get('model'), dict):
        found = sorted(ckpt)[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} has no 'model' state dict (found {found})")
    args = ckpt.get('args')
    model_string = getattr(args, 'model', None) if args is not None else None
    if not isinstance(model_string, str):
        raise CheckpointError(f"{path} has no 'args.model' constructor string; cannot tell "
                              'the architecture')
    class_name, kwargs = parse_model_string(model_string)
    fields = tuple(vars(args)) if hasattr(args, '__dict__') else ()
    return OfficialCheckpoint(ckpt['model'], class_name, kwargs, fields, model_string,
                              {k: ckpt[k] for k in ('epoch',) if k in ckpt})


def convert_checkpoint(src, out, *, trust_pickle: bool = False, layout: str = 'auto',
                       num_maps: int = 4, img_size: tuple[int, int] | None = None) -> Path:
    """Convert an official checkpoint into our safetensors + JSON format.

    Args:
        src: official ``.pth`` or hub export (folder / ``.safetensors`` + ``config.json``).
        out: output stem (``<out>.safetensors`` and ``<out>.json`` are written).
        trust_pickle: allow a full unpickle when the safe load refuses (executes code from
            the file: only for files from a trusted source).
        layout: ``'auto'`` (St4RTrack recognised by its arguments, else DUSt3R/MonST3R),
            ``'dust3r'``, ``'st4rtrack'`` or ``'dpm'``; see :mod:`~pointmap_ros.model.key_mapping`.
        num_maps: 4 for a DPM model (cross-time heads initialised from same-time heads), 2 for
            a plain pair model.
        img_size: native ``(H, W)`` to record; default from the checkpoint arguments.

    Returns:
        Path of the written JSON file.
    """
    ckpt = read_official_checkpoint(src, trust_pickle=trust_pickle)
    if layout == 'auto':
        layout = detect_layout(ckpt.kwargs, ckpt.arg_fields)
    elif layout not in LAYOUTS:
        raise CheckpointError(f"unknown layout {layout!r}; expected 'auto' or one of {LAYOUTS}")
    config = config_from_official_kwargs(ckpt.class_name, ckpt.kwargs, num_maps=num_maps,
                                         img_size=img_size)
    state, provenance = remap_state_dict(ckpt.state, layout, num_maps)
    if config.head_type == 'dpt':
        config = dataclasses.replace(config, **dpt_widths_from_state(state))
    model = DynamicPointMapNet(config)
    load_state_dict_checked(model, state, source=str(src))
    logger.info('converted %s (layout %s): %s', src, layout, provenance)
    return save_checkpoint(model, out, source={
        'kind': 'converted', 'file': Path(src).name, 'file_sha256': _file_sha256(Path(src))
        if Path(src).is_file() else None, 'layout': layout, 'class': ckpt.class_name,
        'model_string': ckpt.model_string, 'heads': provenance, **ckpt.extra})
