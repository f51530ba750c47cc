#!/usr/bin/env python3
"""Resolve the ROS-path requirements.txt for the Pythons of the ROS 2 distributions.

A ROS 2 workspace installs requirements.txt into the distribution's Python: Humble 3.10,
Jazzy 3.12, Kilted 3.12 (and 3.11, the Kilted wheels of the pip-only set-up). For each
version this asks pip which binary wheels it would install (metadata only, nothing is
installed; seconds per version):

    pip --isolated install --dry-run --ignore-installed --only-binary=:all: \\
        --python-version X.Y --no-deps --target DIR --index-url URL -r requirements.txt

``--isolated`` ignores this machine's pip configuration (local mirrors, constraint caps), so
the answer is what a ROS user gets from the public registry. Exit status 0 when every
version resolves, 1 when one does not, 2 when the registry cannot be reached.

    python scripts/check_requirements.py [--python 3.10 3.11 3.12] [--index-url URL]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHONS = ('3.10', '3.11', '3.12')
PYPI = 'https://pypi.org/simple'
# pip's words when it could not talk to the index at all (not a resolution failure).
_UNREACHABLE = re.compile(r'NewConnectionError|Failed to establish a new connection|'
                          r'Temporary failure in name resolution|ProxyError|'
                          r'Max retries exceeded|Network is unreachable|SSLError')


def resolve(python: str, requirements: Path, index_url: str) -> tuple[str, str]:
    """('ok' | 'failed' | 'unreachable', pip's output) for one Python version."""
    with tempfile.TemporaryDirectory() as target:
        proc = subprocess.run(
            [sys.executable, '-m', 'pip', '--isolated', '--disable-pip-version-check',
             'install', '--dry-run', '--ignore-installed', '--only-binary=:all:',
             '--python-version', python, '--no-deps', '--target', target,
             '--index-url', index_url, '-r', str(requirements)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    if proc.returncode == 0:
        return 'ok', proc.stdout
    return ('unreachable' if _UNREACHABLE.search(proc.stdout) else 'failed'), proc.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--python', nargs='+', default=list(PYTHONS),
                        help='Python versions (default: %(default)s)')
    parser.add_argument('--index-url', default=PYPI, help='index (default: %(default)s)')
    parser.add_argument('--requirements', type=Path, default=ROOT / 'requirements.txt')
    args = parser.parse_args(argv)
    worst = 0
    for python in args.python:
        status, output = resolve(python, args.requirements, args.index_url)
        would = re.search(r'^Would install (.*)$', output, re.M)
        if status == 'ok':
            print(f'Python {python}: OK, would install {would.group(1) if would else "?"}')
            continue
        print(f'Python {python}: {status.upper()}\n{output.strip()}')
        worst = max(worst, 2 if status == 'unreachable' else 1)
    return worst


if __name__ == '__main__':
    sys.exit(main())
