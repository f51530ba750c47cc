"""``pointmap-build-engine``: build (or find cached) TensorRT engines for an ONNX export.

The offline equivalent of what the node does on first start: builds the encoder and decoder
engines into the persistent cache (keyed by ONNX hash, resolution, precision, TensorRT
version and GPU), and writes a small manifest JSON that the node's ``engine_path`` parameter
accepts. Running it again is a cache hit unless ``--force-rebuild``.

Example::

    pointmap-build-engine --onnx onnx/small-288x512-1a2b3c4d.json --precision fp16 \\
        --manifest small-288x512-fp16.trt.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from pointmap_ros.errors import PointmapError

__all__ = ['main']


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='pointmap-build-engine',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--onnx', required=True,
                        help='export sidecar JSON, or a folder holding one export')
    parser.add_argument('--precision', choices=('fp32', 'fp16'), default='fp16')
    parser.add_argument('--cache-dir', help='engine cache folder (default: '
                        '$XDG_CACHE_HOME/pointmap_ros/engines or ~/.cache/pointmap_ros/engines)')
    parser.add_argument('--workspace-gib', type=float, default=4.0)
    parser.add_argument('--force-rebuild', action='store_true')
    parser.add_argument('--manifest', help='where to write the manifest for engine_path '
                        '(default: next to the engines)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')

    from pointmap_ros.engines.tensorrt_engine import TensorRTEngine
    try:
        start = time.perf_counter()
        engine = TensorRTEngine(args.onnx, precision=args.precision, cache_dir=args.cache_dir,
                                force_rebuild=args.force_rebuild,
                                workspace_gib=args.workspace_gib)
        elapsed = time.perf_counter() - start
        export = engine.export
        manifest = args.manifest or engine.cache.cache_dir / (
            f'{export.model_name}-{export.height}x{export.width}-{args.precision}.trt.json')
        engine.write_manifest(manifest)
        engine.close()
    except PointmapError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(json.dumps(engine.engine_files, indent=1))
    print(f'ready in {elapsed:.1f} s; manifest (engine_path): {manifest}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
