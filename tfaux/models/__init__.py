"""Backbones (shared encoders) for AuxiliaryModel."""

from tfaux.models.convnet import convnet4
from tfaux.models.mlp import mlp_encoder
