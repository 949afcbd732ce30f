"""Optical-flow data utilities: file formats, benchmark layouts, synthetic
training pairs, augmentation, metrics, visualisation and tiled inference.

Why a separate subpackage: these are NumPy/Pillow-only tools that the flow
data pipeline, evaluator and predict script share; keeping them free of
JAX/TensorFlow makes them usable (and testable) anywhere.
"""

from perceiver_io.flow.augment import (
  PhotometricConfig,
  SpatialConfig,
  augment_sample,
  crop_sample,
  flip_sample,
  photometric_augment,
  resize_sample,
  spatial_augment,
)
from perceiver_io.flow.formats import (
  known_flow_mask,
  read_flo,
  read_image,
  read_kitti_flow,
  read_mask,
  write_flo,
  write_kitti_flow,
)
from perceiver_io.flow.layouts import (
  FlowPairFiles,
  list_flying_chairs,
  list_kitti,
  list_middlebury,
  list_sintel,
  load_pair,
  flying_chairs_samples,
  kitti_samples,
  middlebury_samples,
  sintel_samples,
)
from perceiver_io.flow.metrics import (
  endpoint_error,
  flow_metric_sums,
  flow_metrics,
)
from perceiver_io.flow.synthetic import (
  SyntheticFlowConfig,
  generate_pair,
  sample_at,
  synthetic_flow_batches,
)
from perceiver_io.flow.tiling import tile_origins, tile_weights, tiled_flow
from perceiver_io.flow.viz import flow_to_color, save_flow_png

__all__ = [
  'FlowPairFiles',
  'PhotometricConfig',
  'SpatialConfig',
  'SyntheticFlowConfig',
  'augment_sample',
  'crop_sample',
  'endpoint_error',
  'flip_sample',
  'flow_metric_sums',
  'flow_metrics',
  'flow_to_color',
  'flying_chairs_samples',
  'generate_pair',
  'kitti_samples',
  'known_flow_mask',
  'list_flying_chairs',
  'list_kitti',
  'list_middlebury',
  'list_sintel',
  'load_pair',
  'middlebury_samples',
  'photometric_augment',
  'read_flo',
  'read_image',
  'read_kitti_flow',
  'read_mask',
  'resize_sample',
  'sample_at',
  'save_flow_png',
  'sintel_samples',
  'spatial_augment',
  'synthetic_flow_batches',
  'tile_origins',
  'tile_weights',
  'tiled_flow',
  'write_flo',
  'write_kitti_flow',
]
