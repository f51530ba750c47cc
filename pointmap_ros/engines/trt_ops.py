"""ONNX operators the TensorRT 10 ONNX parser accepts, and a checker for exported graphs.

TensorRT cannot be installed on the machines that run CI, so the export is checked against
the parser's published support matrix instead (``docs/operators.md`` of
github.com/onnx/onnx-tensorrt, TensorRT 10.x, opsets 9 to 20 for 10.0). Listed here are the
operators marked supported there, minus those added after 10.0 (``Attention``,
``RotaryEmbedding``, ``RMSNormalization``, ``TensorScatter``) so that a graph passing the
check parses on every TensorRT 10 release. Restrictions that our graphs could plausibly hit
are checked too (Resize modes, constant axes). Data-dependent control flow
(``If``/``Loop``/``Scan``) is supported by the parser but flagged separately by
:func:`dynamic_ops`, because baked RoPE tables must leave none behind.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import onnx

__all__ = ['TRT10_SUPPORTED_OPS', 'TRT10_MAX_OPSET', 'DYNAMIC_OPS', 'OpReport', 'check_trt_ops',
           'dynamic_ops', 'op_histogram']

#: Highest default-domain opset the TensorRT 10.0 parser supports.
TRT10_MAX_OPSET = 20

TRT10_SUPPORTED_OPS = frozenset('''
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose
Cos Cosh CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp
Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool
GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow
HannWindow HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf
IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization
LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression
NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal
RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum
ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape
Resize ReverseSequence RNN RoiAlign Round STFT ScaledTanh Scan Scatter ScatterElements ScatterND
Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split
Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where
Xor
'''.split())

#: Ops that betray data-dependent shapes or control flow (e.g. an un-baked RoPE table built
#: from ``positions.max()``); TensorRT either rejects them or ORT-TRT silently falls back.
DYNAMIC_OPS = frozenset({'If', 'Loop', 'Scan', 'Range', 'NonZero'})

_RESIZE_MODES = {'nearest', 'linear'}
_RESIZE_TRANSFORMS = {'half_pixel', 'pytorch_half_pixel', 'tf_half_pixel_for_nn', 'asymmetric',
                      'align_corners'}
# Inputs that the parser needs as build-time constants: op -> input index.
_CONSTANT_INPUTS = {'Squeeze': 1, 'Unsqueeze': 1, 'CumSum': 1, 'ReduceSum': 1}


@dataclass
class OpReport:
    """Outcome of :func:`check_trt_ops` for one graph.

    Attributes:
        ops: histogram op type -> count (default domain only).
        unsupported: op types TensorRT 10's parser does not implement.
        restrictions: human-readable violations of per-op restrictions.
        opset: the graph's default-domain opset.
    """

    ops: dict = field(default_factory=dict)
    unsupported: list = field(default_factory=list)
    restrictions: list = field(default_factory=list)
    opset: int = 0

    @property
    def ok(self) -> bool:
        return not self.unsupported and not self.restrictions


def _load(model: onnx.ModelProto | str) -> onnx.ModelProto:
    # Graphs only: the weights are not needed to check operators.
    if isinstance(model, onnx.ModelProto):
        return model
    return onnx.load(model, load_external_data=False)


def op_histogram(model: onnx.ModelProto | str) -> dict[str, int]:
    """Op type -> count over the main graph and all subgraphs."""
    counts = collections.Counter()

    def visit(graph):
        for node in graph.node:
            counts[node.op_type if node.domain in ('', 'ai.onnx') else
                   f'{node.domain}::{node.op_type}'] += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)
    visit(_load(model).graph)
    return dict(counts)


def dynamic_ops(model: onnx.ModelProto | str) -> list[str]:
    """Sorted op types from :data:`DYNAMIC_OPS` present in the graph."""
    return sorted(set(op_histogram(model)) & DYNAMIC_OPS)


def check_trt_ops(model: onnx.ModelProto | str) -> OpReport:
    """Check every node of an ONNX graph against the TensorRT 10 parser's support matrix."""
    model = _load(model)
    report = OpReport(ops=op_histogram(model))
    report.opset = next((o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')),
                        0)
    if report.opset > TRT10_MAX_OPSET:
        report.restrictions.append(
            f'opset {report.opset} is above the TensorRT 10.0 parser maximum {TRT10_MAX_OPSET}')
    report.unsupported = sorted(op for op in report.ops if op not in TRT10_SUPPORTED_OPS)
    constants = {init.name for init in model.graph.initializer}
    constants |= {out for node in model.graph.node if node.op_type == 'Constant'
                  for out in node.output}
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == 'Resize':
            mode = attrs.get('mode', b'nearest').decode()
            transform = attrs.get('coordinate_transformation_mode', b'half_pixel').decode()
            if mode not in _RESIZE_MODES or transform not in _RESIZE_TRANSFORMS:
                report.restrictions.append(
                    f'{node.name}: Resize mode={mode} coordinate_transformation_mode='
                    f'{transform} is not supported by TensorRT')
            if attrs.get('antialias', 0):
                report.restrictions.append(f'{node.name}: Resize antialias is not supported')
        index = _CONSTANT_INPUTS.get(node.op_type)
        if index is not None and len(node.input) > index and node.input[index] \
                and node.input[index] not in constants:
            report.restrictions.append(
                f'{node.name}: {node.op_type} input {index} ({node.input[index]}) must be a '
                'build-time constant for TensorRT')
    return report
