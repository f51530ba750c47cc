"""``cross_time_source: auto`` on a converted DUSt3R checkpoint, over real DDS.

A DUSt3R-layout ``.pth`` (the shared reference weights, saved as the official training code
saves them) is converted with ``pointmap-convert-checkpoint``: its cross-time heads are then
copies of the same-time heads (zero flow by construction). The node must see this, choose
the correspondence stage, say so in its log and publish the choice in /diagnostics.
"""

import argparse
import json

import pytest
import torch
from ros_harness import PARAMS_FILE, Collector, recon_process, spin_until

from pointmap_ros.model.checkpoint import convert_checkpoint, read_checkpoint_meta

pytestmark = pytest.mark.ros  # needs rclpy and DDS


@pytest.fixture(scope='module')
def dust3r_checkpoint(tmp_path_factory, shared_dir):
    from safetensors.torch import load_file

    reference = shared_dir / 'reference' / 'tiny_dpt'
    if not (reference / 'weights.safetensors').is_file():
        pytest.skip(f'reference weights not found at {reference}')
    config = json.loads((reference / 'config.json').read_text())
    folder = tmp_path_factory.mktemp('dust3r')
    official = folder / 'dust3r_tiny.pth'
    torch.save({'model': load_file(str(reference / 'weights.safetensors')),
                'args': argparse.Namespace(model=config['constructor_python']), 'epoch': 1},
               official)
    converted = convert_checkpoint(official, folder / 'dust3r_tiny_dpm', layout='dust3r')
    heads = read_checkpoint_meta(converted)['source']['heads']
    assert heads['downstream_head3'].startswith('init')  # what 'auto' keys on
    return converted


@pytest.mark.slow
def test_auto_picks_correspondences_for_a_dust3r_checkpoint(ros_node, dust3r_checkpoint):
    collector = Collector(ros_node)
    args = ['--ros-args', '--params-file', str(PARAMS_FILE), '-p', 'backend:=torch',
            '-p', f'model:={dust3r_checkpoint}', '-p', 'cross_time_source:=auto',
            '-p', 'diagnostics_period_s:=0.5', '-p', 'no_input_warn_s:=0.0']
    with recon_process(args) as proc:
        spin_until(ros_node, lambda: collector.diagnostics().get('engine/cross_time_source'),
                   60, 'the engine status in /diagnostics', proc)
        diagnostics = collector.diagnostics()
        assert diagnostics['engine/cross_time_source'] == 'correspondence'
        assert diagnostics['engine/cross_time_heads'] == 'initialised'
        spin_until(ros_node, lambda: 'cross-time maps: correspondence' in proc.output(), 10,
                   'the choice in the log', proc)
        assert "cross-time heads are initialised" in proc.output()
        assert proc.stop() == 0, proc.output()
