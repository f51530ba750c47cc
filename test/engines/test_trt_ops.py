"""TensorRT 10 operator checker on hand-made graphs and on our exported tiny/small graphs."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pointmap_ros.engines.tensorrt_engine import head_node_names
from pointmap_ros.engines.trt_ops import (TRT10_SUPPORTED_OPS, check_trt_ops, dynamic_ops,
                                          op_histogram)
from pointmap_ros.errors import EngineError


def _model(nodes, inputs=('x',), outputs=('y',), initializers=(), opset=17):
    graph = helper.make_graph(
        nodes, 'g', [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', opset)])


def test_plain_graph_passes():
    report = check_trt_ops(_model([helper.make_node('Relu', ['x'], ['h']),
                                   helper.make_node('Exp', ['h'], ['y'])]))
    assert report.ok and report.ops == {'Relu': 1, 'Exp': 1} and report.opset == 17


def test_unsupported_op_is_reported():
    report = check_trt_ops(_model([helper.make_node('Unique', ['x'], ['y'])]))
    assert not report.ok and report.unsupported == ['Unique']


def test_newer_than_trt10_0_ops_are_not_listed():
    assert not {'Attention', 'RotaryEmbedding', 'RMSNormalization'} & TRT10_SUPPORTED_OPS
    assert {'LayerNormalization', 'Erf', 'Resize', 'ConvTranspose'} <= TRT10_SUPPORTED_OPS


def test_opset_above_trt_maximum_is_reported():
    report = check_trt_ops(_model([helper.make_node('Relu', ['x'], ['y'])], opset=21))
    assert any('opset 21' in r for r in report.restrictions)


def test_cubic_resize_is_reported():
    scales = numpy_helper.from_array(np.ones(4, np.float32), 'scales')
    node = helper.make_node('Resize', ['x', '', 'scales'], ['y'], name='up', mode='cubic')
    report = check_trt_ops(_model([node], initializers=[scales]))
    assert report.unsupported == [] and any('mode=cubic' in r for r in report.restrictions)


def test_squeeze_axes_must_be_constant():
    node = helper.make_node('Unsqueeze', ['x', 'axes'], ['y'], name='u')
    assert any('build-time constant' in r
               for r in check_trt_ops(_model([node], inputs=('x', 'axes'))).restrictions)
    axes = numpy_helper.from_array(np.array([0], np.int64), 'axes')
    assert check_trt_ops(_model([node], initializers=[axes])).ok


def test_dynamic_ops_found_in_subgraphs():
    then = helper.make_graph([helper.make_node('Range', ['a', 'b', 'c'], ['r'])], 'then', [],
                             [helper.make_tensor_value_info('r', TensorProto.FLOAT, None)])
    node = helper.make_node('If', ['x'], ['y'], then_branch=then, else_branch=then)
    model = _model([node])
    assert op_histogram(model) == {'If': 1, 'Range': 2}
    assert dynamic_ops(model) == ['If', 'Range']


@pytest.mark.parametrize('preset', ['tiny', 'small'])
def test_exported_graphs_use_only_trt10_ops(exports, preset):
    for path in (exports[preset].encoder_path, exports[preset].decoder_path):
        report = check_trt_ops(str(path))
        assert report.ok, (path.name, report.unsupported, report.restrictions)
        assert report.opset == 17


@pytest.mark.parametrize('preset', ['tiny', 'small'])
def test_fp32_head_region_covers_postprocessing_only(exports, preset):
    model = onnx.load(str(exports[preset].decoder_path), load_external_data=False)
    heads = set(head_node_names(model))
    by_name = {n.name: n for n in model.graph.node}
    exp_nodes = {n.name for n in model.graph.node if n.op_type == 'Exp'}
    assert exp_nodes and exp_nodes <= heads          # every exp of the post-processing
    assert not any('dec_blocks' in name for name in heads)
    assert any('downstream_head4' in name for name in heads)
    assert any(by_name[n].op_type == 'Conv' for n in heads)


def test_head_region_needs_decoder_block_names():
    with pytest.raises(EngineError, match='decoder-block'):
        head_node_names(_model([helper.make_node('Relu', ['x'], ['y'], name='/other/Relu')]))
