"""Backbones (shared encoders) for AuxiliaryModel."""

from tfaux.models.autoint import autoint
from tfaux.models.convnet import convnet4
from tfaux.models.heads import mlp_head
from tfaux.models.lenet import lenet
from tfaux.models.mlp import mlp_encoder
from tfaux.models.resnet import resnet18
from tfaux.models.segnet import segnet
from tfaux.models.tabular import tabular_encoder
from tfaux.models.vgg import vgg16
from tfaux.models.wide_resnet import wide_resnet


def for_input(input_spec):
    """A sensible default encoder for inputs of this spec: ConvNet-4 for images,
    the tabular encoder for dicts of features, an MLP for vectors."""
    if isinstance(input_spec, dict):
        return tabular_encoder(input_spec)
    if len(input_spec.shape) == 3:
        return convnet4()
    return mlp_encoder()
