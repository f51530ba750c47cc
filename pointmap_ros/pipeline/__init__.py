"""The 4D pipeline: frames and pair inference in, scene flow, motion, poses and objects out.

Public entry points (the import path used by the node, the tools and evaluation):
``from pointmap_ros.pipeline import DynamicReconPipeline, PipelineConfig, FrameInput,
PipelineOutput``. Modules: ``config`` (parameters), ``outputs`` (inputs/outputs),
``pair`` (per-pair gated views), ``objects`` (instances and rigid fits), ``pipeline``
(the per-frame orchestration).
"""

from pointmap_ros.pipeline.config import PipelineConfig
from pointmap_ros.pipeline.outputs import FrameInput, PipelineOutput
from pointmap_ros.pipeline.pipeline import DynamicReconPipeline
from pointmap_ros.tracking.tracker import TrackedObject

__all__ = ['DynamicReconPipeline', 'PipelineConfig', 'FrameInput', 'PipelineOutput',
           'TrackedObject']
