#!/usr/bin/env python3
"""Soak: dynamic_recon_node with N looping synthetic cameras for a while; RSS must stay flat.

A reliability measurement (not a test): starts ``dynamic_recon_node`` with cameras
``/soak0 .. /soak{N-1}`` and one ``synthetic_camera_node`` per camera (looping the demo
scene at ``--rate`` Hz, stamped with the ROS clock, started on the node's ``~/ready``), then
samples the node's resident memory every ``--sample-s`` seconds and reads ``/diagnostics``.
At the end it prints the RSS series, the RSS trend over the second half (MB per minute, a
least-squares slope), outputs and drops per camera from /diagnostics, and every line of the
node's log that looks like a numeric warning (``RuntimeWarning``, ``invalid value``,
``overflow``, ``divide by zero``) or an error. Exit status 0 when the trend is below
``--max-trend-mb-per-min`` and no such line appeared, else 1.

    source scripts/env.sh
    python scripts/soak_ros.py --cameras 4 --rate 30 --minutes 10     # the issue-10 soak
    python scripts/soak_ros.py --cameras 1 --minutes 1 --backend oracle  # a quick look

Needs the colcon overlay (scripts/setup.sh). Uses this shell's ROS_DOMAIN_ID (set one that
nobody else uses on a shared machine).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODES = ROOT / 'scripts' / 'nodes'
_SUSPECT = re.compile(r'RuntimeWarning|invalid value|overflow encountered|divide by zero|'
                      r'\[ERROR\]|\[FATAL\]|Traceback')


def rss_mb(pid: int) -> float:
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f'no VmRSS for pid {pid}')


def trend_mb_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) over the second half of the run, in MB/min."""
    half = samples[len(samples) // 2:]
    if len(half) < 2:
        return 0.0
    n = len(half)
    mean_t = sum(t for t, _ in half) / n
    mean_m = sum(m for _, m in half) / n
    var = sum((t - mean_t) ** 2 for t, _ in half)
    cov = sum((t - mean_t) * (m - mean_m) for t, m in half)
    return 60.0 * cov / var if var else 0.0


def start(script: Path, args: list[str], log: Path) -> subprocess.Popen:
    out = log.open('w')
    return subprocess.Popen([sys.executable, '-u', str(script), *args], stdout=out,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--cameras', type=int, default=4)
    parser.add_argument('--rate', type=float, default=30.0, help='frames per second per camera')
    parser.add_argument('--minutes', type=float, default=10.0)
    parser.add_argument('--sample-s', type=float, default=10.0)
    parser.add_argument('--backend', default='auto')
    parser.add_argument('--size', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'))
    parser.add_argument('--max-trend-mb-per-min', type=float, default=1.0)
    parser.add_argument('--out', type=Path, default=ROOT / 'runs' / 'soak')
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor

    cameras = [f'/soak{k}' for k in range(args.cameras)]
    node_args = ['--ros-args', '--params-file', str(ROOT / 'config' / 'dynamic_recon.yaml'),
                 '-p', f'cameras:={cameras}', '-p', f'backend:={args.backend}']
    if args.backend == 'oracle':
        node_args += ['-p', f'oracle_height:={args.size[0]}',
                      '-p', f'oracle_width:={args.size[1]}', '-p', f'oracle_fps:={args.rate}']
    procs = {'node': start(NODES / 'dynamic_recon_node', node_args, args.out / 'node.log')}
    for k, ns in enumerate(cameras):
        params = {'namespace': ns, 'fps': args.rate, 'height': args.size[0],
                  'width': args.size[1], 'loop': True, 'publish_tf': False,
                  'stamp_source': 'clock', 'wait_for_ready': '/dynamic_recon_node/ready',
                  'wait_for_subscribers': True, 'start_delay_s': 0.5, 'seed': k}
        cam_args = ['--ros-args', '-r', f'__node:=soak_camera_{k}']
        cam_args += [a for name, v in params.items() for a in ('-p', f'{name}:={v}')]
        procs[f'camera{k}'] = start(NODES / 'synthetic_camera_node', cam_args,
                                    args.out / f'camera{k}.log')

    rclpy.init()
    probe = rclpy.create_node('soak_probe')
    latest = {}
    probe.create_subscription(
        DiagnosticArray, '/diagnostics',
        lambda m: latest.update({f'{s.name}/{kv.key}': kv.value for s in m.status
                                 for kv in s.values if s.name.startswith('dynamic_recon')}),
        10)
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    samples: list[tuple[float, float]] = []
    start_s = time.monotonic()
    end_s = start_s + 60.0 * args.minutes
    next_sample = start_s
    try:
        while time.monotonic() < end_s:
            executor.spin_once(timeout_sec=0.2)
            dead = [name for name, p in procs.items() if p.poll() is not None]
            if dead:
                print(f'process(es) exited early: {dead}; see {args.out}')
                return 1
            if time.monotonic() >= next_sample:
                samples.append((time.monotonic() - start_s, rss_mb(procs['node'].pid)))
                print(f'{samples[-1][0]:7.0f} s  RSS {samples[-1][1]:8.1f} MB  published '
                      f"{latest.get('dynamic_recon_node: processing/published', '?')}  "
                      f"dropped {latest.get('dynamic_recon_node: processing/dropped total', '?')}",
                      flush=True)
                next_sample += args.sample_s
    finally:
        codes = {name: stop(p) for name, p in procs.items()}
        executor.shutdown()
        probe.destroy_node()
        rclpy.try_shutdown()
    log = (args.out / 'node.log').read_text()
    suspects = [line for line in log.splitlines() if _SUSPECT.search(line)]
    trend = trend_mb_per_min(samples)
    keys = sorted(k for k in latest if 'dropped' in k or 'published' in k or 'processed' in k
                  or 'received' in k or 'latency' in k)
    print('\n'.join(f'  {k}: {latest[k]}' for k in keys))
    print(f'RSS first {samples[0][1]:.1f} MB, last {samples[-1][1]:.1f} MB, max '
          f'{max(m for _, m in samples):.1f} MB; trend over the second half {trend:+.2f} MB/min')
    print(f'exit codes {codes}; suspicious log lines: {len(suspects)}')
    for line in suspects[:20]:
        print('  ' + line)
    ok = abs(trend) <= args.max_trend_mb_per_min and not suspects and not any(codes.values())
    print('SOAK', 'OK' if ok else 'FAILED')
    return 0 if ok else 1


if __name__ == '__main__':
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    sys.exit(main())
