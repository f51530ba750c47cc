"""docs/architecture.md's module tree is the real package tree.

The tree is read from the fenced block under "## Module tree" (two spaces of indentation per
level, a trailing ``/`` for packages) and compared with the modules on disk both ways, so a
new module that is not documented, or a rename (``data/objects.py`` -> ``data/surfaces.py``)
that the document missed, fails with the path to fix.
"""

import re

from helpers import REPO_ROOT

PACKAGE = REPO_ROOT / 'pointmap_ros'
DOC = REPO_ROOT / 'docs' / 'architecture.md'


def documented_paths() -> set[str]:
    """Paths (relative to pointmap_ros/, packages with a trailing ``/``) listed in the tree."""
    text = DOC.read_text()
    section = text.split('## Module tree', 1)[1]
    block = re.search(r'```\n(.*?)```', section, flags=re.S).group(1)
    lines = block.splitlines()
    assert lines[0] == 'pointmap_ros/', 'the tree must start at pointmap_ros/'
    parents: list[str] = []
    paths = set()
    for line in lines[1:]:
        indent = len(line) - len(line.lstrip(' '))
        name = line.split()[0] if line.strip() else ''
        if not name.endswith(('/', '.py')):
            continue  # the continuation of a description
        depth = indent // 2 - 1  # top-level entries are indented by two spaces
        parents = parents[:depth]
        path = ''.join(parents) + name
        paths.add(path)
        if name.endswith('/'):
            parents.append(name)
    return paths


def package_paths() -> set[str]:
    """Every module and package of pointmap_ros on disk (``__init__.py`` files excluded)."""
    paths = set()
    for path in PACKAGE.rglob('*.py'):
        relative = path.relative_to(PACKAGE)
        if '__pycache__' in relative.parts:
            continue
        if path.name == '__init__.py':
            if relative.parent.parts:  # a subpackage: listed as its folder
                paths.add(relative.parent.as_posix() + '/')
        else:
            paths.add(relative.as_posix())
    return paths


def test_the_tree_parser_reads_nested_packages():
    documented = documented_paths()
    assert {'errors.py', 'ros/', 'ros/camera_stream.py', 'model/heads/',
            'model/heads/dpt.py'} <= documented


def test_every_module_is_in_the_architecture_tree():
    missing = sorted(package_paths() - documented_paths())
    assert not missing, f'modules missing from the tree in docs/architecture.md: {missing}'


def test_the_architecture_tree_lists_no_module_that_is_gone():
    gone = sorted(documented_paths() - package_paths())
    assert not gone, (f'docs/architecture.md lists modules that do not exist (renamed or '
                      f'removed?): {gone}')
