"""``pointmap-convert-checkpoint``: official DUSt3R / MonST3R / St4RTrack weights -> our format.

Examples::

    # DUSt3R 512 DPT -> a DPM model (cross-time heads start as copies of the same-time heads)
    pointmap-convert-checkpoint DUSt3R_ViTLarge_BaseDecoder_512_dpt.pth models/dust3r_dpm
    # St4RTrack (detected from its arguments; --layout st4rtrack forces it)
    pointmap-convert-checkpoint st4rtrack_seq.pth models/st4r_dpm --layout st4rtrack
    # a hub export (folder with model.safetensors + config.json): no pickle involved
    pointmap-convert-checkpoint ./DUSt3R_ViTLarge_BaseDecoder_512_dpt/ models/dust3r_dpm

Writes ``<out>.safetensors`` + ``<out>.json``. The ``.pth`` is read with
``torch.load(weights_only=True)`` allowing only ``argparse.Namespace``; ``--trust-pickle``
allows a full unpickle, which EXECUTES CODE FROM THE FILE: use it only for files you trust.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from pointmap_ros.errors import PointmapError
from pointmap_ros.model.checkpoint import convert_checkpoint, read_checkpoint_meta
from pointmap_ros.model.key_mapping import LAYOUTS

__all__ = ['main', 'build_parser']


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='pointmap-convert-checkpoint',
        description='Convert an official DUSt3R-family checkpoint into pointmap_ros '
                    'safetensors + JSON.')
    parser.add_argument('src', help='official .pth, or a hub folder / .safetensors with '
                                    'config.json')
    parser.add_argument('out', help='output stem: writes <out>.safetensors and <out>.json')
    parser.add_argument('--layout', default='auto', choices=('auto',) + LAYOUTS,
                        help='head layout of the source (default: detect St4RTrack from its '
                             'arguments, else DUSt3R/MonST3R)')
    parser.add_argument('--num-maps', type=int, default=4, choices=(2, 4),
                        help='4: DPM model (default); 2: plain DUSt3R pair model')
    parser.add_argument('--img-size', type=int, nargs=2, metavar=('H', 'W'),
                        help='native input size to record (default: from the checkpoint)')
    parser.add_argument('--trust-pickle', action='store_true',
                        help='allow a full unpickle if the safe load refuses: this EXECUTES '
                             'CODE FROM THE FILE; only for files from a trusted source')
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    try:
        json_path = convert_checkpoint(
            args.src, args.out, trust_pickle=args.trust_pickle, layout=args.layout,
            num_maps=args.num_maps, img_size=tuple(args.img_size) if args.img_size else None)
    except PointmapError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    meta = read_checkpoint_meta(json_path)
    print(json.dumps({'json': str(json_path), 'weights': meta['weights'],
                      'layout': meta['source']['layout'], 'heads': meta['source']['heads'],
                      'num_parameters': meta['num_parameters']}, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
