"""``pointmap-export-onnx``: export a checkpoint (or a preset with random weights) to ONNX.

Writes ``<model>-<H>x<W>-<hash8>.{encoder,decoder}.onnx`` plus the JSON sidecar for each
requested resolution, runs ``onnx.checker``, the TensorRT 10 operator check and the
ORT-vs-PyTorch parity check, and prints the parity table. Exit status 1 if a check fails.

Examples::

    pointmap-export-onnx --checkpoint model.json --resolution 512x288 --out onnx/
    pointmap-export-onnx --preset tiny --resolution 96x64 --out /tmp/onnx   # random weights
"""

from __future__ import annotations

import argparse
import logging
import sys

from pointmap_ros.errors import PointmapError

__all__ = ['main', 'parse_resolution']


def parse_resolution(text: str) -> tuple[int, int]:
    """``'512x288'`` (W x H, as resolutions are quoted) -> ``(288, 512)`` (H, W)."""
    try:
        w, h = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'resolution {text!r} is not WxH, e.g. 512x288') from None
    return h, w


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='pointmap-export-onnx',
                                     description=__doc__.split('\n')[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--checkpoint', help='our checkpoint (.json / .safetensors / stem)')
    source.add_argument('--preset', choices=('tiny', 'small', 'official'),
                        help='random-weight model of a preset size (for tests and timing)')
    parser.add_argument('--resolution', type=parse_resolution, action='append',
                        help='WxH; repeat for several (default: the model native size)')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--name', help='file-name prefix (default: checkpoint stem / preset)')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--no-parity', action='store_true', help='skip the parity check')
    parser.add_argument('--force', action='store_true', help='overwrite an existing export')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')

    import torch

    from pointmap_ros.engines.onnx_export import check_parity, export_onnx
    from pointmap_ros.engines.trt_ops import check_trt_ops
    from pointmap_ros.model import DynamicPointMapNet, ModelConfig
    from pointmap_ros.model.checkpoint import checkpoint_paths, load_checkpoint

    try:
        if args.checkpoint:
            model = load_checkpoint(args.checkpoint)
            weights = checkpoint_paths(args.checkpoint)[0]
            name = args.name or weights.stem
        else:
            torch.manual_seed(0)
            model = DynamicPointMapNet(ModelConfig.preset(args.preset)).eval()
            weights, name = None, args.name or args.preset
        ok = True
        for shape in args.resolution or [tuple(model.config.img_size)]:
            export = export_onnx(model, args.out, shape, model_name=name, checkpoint=weights,
                                 opset=args.opset, reuse=not args.force)
            print(f'\n{export.sidecar}  ({shape[1]}x{shape[0]} WxH)')
            for path in (export.encoder_path, export.decoder_path):
                report = check_trt_ops(str(path))
                ok &= report.ok
                print(f'  {path.name}: {sum(report.ops.values())} nodes, TensorRT 10 ops '
                      f'{"OK" if report.ok else "FAIL"} {report.unsupported or ""}'
                      f'{report.restrictions or ""}')
            if not args.no_parity:
                result = check_parity(model, export)
                ok &= result.ok
                print(result.table())
    except PointmapError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
