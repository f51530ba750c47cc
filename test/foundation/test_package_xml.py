"""package.xml is a valid format-3 manifest that declares everything the code needs.

- Schema-level checks of REP 149 (format 3) with xml.etree: root, required elements and their
  order, allowed tags, no duplicate declarations, the interface-package group.
- Every ROS package imported by the package's sources (pointmap_ros/, launch/, the node
  launchers) or started by the launch file is declared as a dependency.
- Every other third-party import is either declared with its rosdep key or listed as a pip
  dependency in README.md (and pinned in requirements.txt).
- The manifest agrees with CMakeLists.txt, setup.py and the package version.
"""

import ast
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = 'pointmap_ros'

# REP 149 (format 3): these three come first, in this order; the rest may follow in any order.
LEADING_TAGS = ['name', 'version', 'description']
ALLOWED_TAGS = set(LEADING_TAGS) | {
    'maintainer', 'license', 'url', 'author', 'build_depend', 'build_export_depend',
    'buildtool_depend', 'buildtool_export_depend', 'exec_depend', 'depend', 'doc_depend',
    'test_depend', 'conflict', 'replace', 'group_depend', 'member_of_group', 'export'}
RUNTIME_DEP_TAGS = {'depend', 'exec_depend', 'build_export_depend'}
DEP_TAGS = RUNTIME_DEP_TAGS | {'build_depend', 'buildtool_depend', 'buildtool_export_depend',
                               'test_depend', 'doc_depend'}

# Python modules of ROS packages that do not follow the *_msgs/_srvs/_interfaces naming.
ROS_PYTHON_PACKAGES = {
    'rclpy', 'launch', 'launch_ros', 'launch_testing', 'launch_testing_ros', 'tf2_ros',
    'tf2_py', 'tf2_geometry_msgs', 'tf2_sensor_msgs', 'message_filters', 'cv_bridge',
    'image_geometry', 'diagnostic_updater', 'ament_index_python', 'rosbag2_py',
    'sensor_msgs_py', 'rosidl_runtime_py', 'rpyutils', 'rclpy_components'}
# Third-party imports that have a rosdep key (rosdistro/rosdep/python.yaml, base.yaml).
ROSDEP_KEYS = {
    'numpy': 'python3-numpy', 'cv2': 'python3-opencv', 'scipy': 'python3-scipy',
    'yaml': 'python3-yaml', 'tqdm': 'python3-tqdm', 'matplotlib': 'python3-matplotlib',
    'PIL': 'python3-pil'}
# Optional accelerator back-ends: documented in the README, not installable from our pins.
OPTIONAL_PIP = {'tensorrt'}


@pytest.fixture(scope='module')
def manifest() -> ET.Element:
    return ET.parse(ROOT / 'package.xml').getroot()


def declared(manifest: ET.Element, tags=DEP_TAGS) -> set:
    return {e.text.strip() for e in manifest if e.tag in tags}


def source_files() -> list:
    """Files whose imports ship with the package: the Python package, launch files, launchers."""
    files = sorted((ROOT / PACKAGE).rglob('*.py')) + sorted((ROOT / 'launch').glob('*.py'))
    files += sorted(p for p in (ROOT / 'scripts' / 'nodes').iterdir() if p.is_file())
    return files


def imported_top_level_modules() -> dict:
    """{top-level module: first 'file:line' importing it} over the absolute imports."""
    found = {}
    for path in source_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split('.')[0],
                                 f'{path.relative_to(ROOT)}:{node.lineno}')
    return found


def is_ros_package(module: str) -> bool:
    return module in ROS_PYTHON_PACKAGES or module.endswith(
        ('_msgs', '_srvs', '_interfaces', '_actions'))


def launch_node_packages() -> dict:
    """{package: launch file} for every literal ``package='...'`` keyword in launch/*.py."""
    found = {}
    for path in sorted((ROOT / 'launch').glob('*.py')):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == 'package' and isinstance(
                    node.value, ast.Constant) and isinstance(node.value.value, str):
                found.setdefault(node.value.value, path.name)
    return found


def readme_pip_dependencies() -> set:
    """Backticked names in README.md's pip-dependencies block."""
    text = (ROOT / 'README.md').read_text()
    match = re.search(r'<!-- pip-dependencies.*?-->(.*?)<!-- /pip-dependencies -->', text, re.S)
    assert match, 'README.md has no <!-- pip-dependencies --> ... <!-- /pip-dependencies --> block'
    return set(re.findall(r'^\|\s*`([A-Za-z0-9_.-]+)`', match.group(1), re.M))


def read_requirements(*names: str) -> dict:
    """{lower-case name: specifier} of the given requirement files."""
    pins = {}
    for name in names:
        for line in (ROOT / name).read_text().splitlines():
            line = line.split('#')[0].strip()
            if line:
                package, spec = re.match(r'([A-Za-z0-9_.-]+)\s*(.*)', line).groups()
                pins[package.lower()] = spec
    return pins


def test_format3_structure(manifest):
    assert manifest.tag == 'package'
    assert manifest.get('format') == '3'
    tags = [e.tag for e in manifest]
    assert tags[:3] == LEADING_TAGS, f'first elements are {tags[:3]}, expected {LEADING_TAGS}'
    assert set(tags) <= ALLOWED_TAGS, f'unknown elements: {set(tags) - ALLOWED_TAGS}'
    for tag in LEADING_TAGS:
        assert tags.count(tag) == 1, f'<{tag}> must appear exactly once'
    assert re.fullmatch(r'[a-z][a-z0-9_]*', manifest.findtext('name'))
    assert re.fullmatch(r'\d+\.\d+\.\d+', manifest.findtext('version'))
    assert manifest.findtext('description').strip()
    maintainers = manifest.findall('maintainer')
    assert maintainers and all(m.get('email') and m.text.strip() for m in maintainers)
    licenses = manifest.findall('license')
    assert licenses and all(lic.text.strip() for lic in licenses)


def test_no_duplicate_dependencies(manifest):
    seen = {}
    for e in manifest:
        if e.tag in DEP_TAGS:
            key = (e.tag, e.text.strip())
            assert key not in seen, f'<{e.tag}>{key[1]}</{e.tag}> declared twice'
            seen[key] = True
    both = declared(manifest, {'depend'}) & declared(manifest, DEP_TAGS - {'depend'})
    assert not both, f'already covered by <depend>: {sorted(both)}'


def test_identity_matches_build_files(manifest):
    import pointmap_ros

    name, version = manifest.findtext('name'), manifest.findtext('version')
    assert name == PACKAGE
    assert re.search(rf'project\(\s*{name}\s*\)', (ROOT / 'CMakeLists.txt').read_text())
    setup_py = (ROOT / 'setup.py').read_text()
    assert f"name='{name}'" in setup_py and f"version='{version}'" in setup_py
    assert pointmap_ros.__version__ == version
    export = manifest.find('export')
    assert export is not None and export.findtext('build_type') == 'ament_cmake'


def test_interface_package_declarations(manifest):
    """What rosidl_generate_interfaces needs: generators, runtime, group, message deps."""
    assert {'ament_cmake', 'ament_cmake_python', 'rosidl_default_generators'} <= declared(
        manifest, {'buildtool_depend'})
    assert 'rosidl_default_runtime' in declared(manifest, RUNTIME_DEP_TAGS)
    assert 'rosidl_interface_packages' in declared(manifest, {'member_of_group'})

    cmake = (ROOT / 'CMakeLists.txt').read_text()
    call = re.search(r'rosidl_generate_interfaces\(\s*\$\{PROJECT_NAME\}(.*?)\)', cmake, re.S)
    assert call, 'CMakeLists.txt does not call rosidl_generate_interfaces(${PROJECT_NAME} ...)'
    listed, _, deps = call.group(1).partition('DEPENDENCIES')
    msg_files = {f'msg/{p.name}' for p in (ROOT / 'msg').glob('*.msg')}
    assert set(listed.split()) == msg_files, 'msg/ and rosidl_generate_interfaces disagree'
    missing = set(deps.split()) - declared(manifest, {'depend', 'build_depend'})
    assert not missing, f'interface dependencies not declared for the build: {missing}'


def test_every_imported_ros_package_is_declared(manifest):
    imports = imported_top_level_modules()
    assert 'rclpy' in imports, 'scan found no rclpy import: is the source scan broken?'
    deps = declared(manifest, RUNTIME_DEP_TAGS)
    missing = {m: where for m, where in imports.items()
               if is_ros_package(m) and m != PACKAGE and m not in deps}
    assert not missing, f'ROS packages imported but not declared in package.xml: {missing}'


def test_every_launched_package_is_declared(manifest):
    launched = launch_node_packages()
    deps = declared(manifest, RUNTIME_DEP_TAGS)
    missing = {p: f for p, f in launched.items() if p != PACKAGE and p not in deps}
    assert not missing, f'packages started by launch files but not declared: {missing}'


def test_python_dependencies_have_rosdep_keys_or_are_documented_pip_deps(manifest):
    imports = imported_top_level_modules()
    third_party = {m: where for m, where in imports.items()
                   if m not in sys.stdlib_module_names and m != PACKAGE
                   and not is_ros_package(m)}
    assert 'numpy' in third_party, 'scan found no numpy import: is the source scan broken?'
    deps = declared(manifest, RUNTIME_DEP_TAGS)
    pip_listed = readme_pip_dependencies()
    problems = []
    for module, where in sorted(third_party.items()):
        key = ROSDEP_KEYS.get(module)
        if key is not None:
            if key not in deps:
                problems.append(f'{module} ({where}): declare <exec_depend>{key}</exec_depend>')
        elif module not in pip_listed:
            problems.append(f'{module} ({where}): no rosdep key known here and not listed in '
                            "README.md's pip dependencies")
    assert not problems, '\n'.join(problems)


def test_pip_dependencies_have_ranges_and_pins():
    """requirements.txt (the ROS-native path) holds compatible ranges; constraints.txt pins
    each of them, and of requirements-dev.txt, with == to a version inside its range (the
    wheel-based set-up installs exactly those); requirements-ros.txt pins the ROS wheels."""
    from packaging.specifiers import SpecifierSet
    ranges = read_requirements('requirements.txt', 'requirements-dev.txt')
    pins = read_requirements('constraints.txt')
    ros = read_requirements('requirements-ros.txt')
    for name in readme_pip_dependencies() - OPTIONAL_PIP:
        assert name.lower() in ranges, f'{name} (README) missing from requirements.txt'
    assert not [n for n, s in ranges.items() if not s or s.startswith('==')], \
        f'requirements.txt / requirements-dev.txt need ranges, not exact pins: {ranges}'
    for name, spec in ranges.items():
        assert pins.get(name, '').startswith('=='), f'{name} not pinned in constraints.txt'
        assert pins[name][2:] in SpecifierSet(spec), \
            f'{name}: pin {pins[name]} outside the range {spec}'
    unpinned = {n: s for n, s in {**pins, **ros}.items() if not s.startswith('==')}
    assert not unpinned, f'constraints.txt / requirements-ros.txt pin with ==: {unpinned}'
    assert pins['torch'] == '==2.13.0'
    major = int(ros['setuptools'].lstrip('=').split('.')[0])
    assert major < 80, 'colcon-core needs setuptools<80'


def test_node_launchers_match_console_scripts():
    """`ros2 run` launchers (scripts/nodes) and pip console scripts start the same code."""
    tree = ast.parse((ROOT / 'setup.py').read_text())
    scripts = next(ast.literal_eval(n.value) for n in ast.walk(tree) if isinstance(n, ast.Assign)
                   and getattr(n.targets[0], 'id', '') == 'CONSOLE_SCRIPTS')
    entry_points = dict(s.split('=') for s in scripts)
    launchers = sorted(p for p in (ROOT / 'scripts' / 'nodes').iterdir() if p.is_file())
    assert launchers
    for path in launchers:
        module = re.search(r'^from (\S+) import main$', path.read_text(), re.M).group(1)
        assert entry_points.get(path.name) == f'{module}:main', path.name
        assert path.stat().st_mode & 0o111, f'{path} is not executable'
        assert path.name in (ROOT / 'CMakeLists.txt').read_text(), f'{path.name} not installed'
