"""Encoder factory and heads."""

from .encoder import EncoderConfig, ResNetEncoder, build_encoder, export_trunk, load_trunk
from .heads import ClassifierHead, ProjectionHead, SimCLRModel

__all__ = [
    "ClassifierHead",
    "EncoderConfig",
    "ProjectionHead",
    "ResNetEncoder",
    "SimCLRModel",
    "build_encoder",
    "export_trunk",
    "load_trunk",
]
