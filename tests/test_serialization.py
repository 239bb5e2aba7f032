"""Keras serialization of everything an AuxiliaryModel's config holds: every method (strategy),
the hypergradient solvers, the upper settings, and every backbone of tfaux.models."""

import inspect
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfaux import hypergrad, models, strategies
from tfaux.strategies import JTDS, MAXL, AuxiLearn, AuxiLearnLabels, DTGAuxL, Strategy
from tfaux.upper import UpperSettings

LAYER_KEYS = {"name", "trainable", "dtype"}


@keras.saving.register_keras_serializable(package="tfaux_tests")
def tiny_backbone(spec):
    """A registered generator backbone (input_spec -> layer)."""
    del spec
    return keras.layers.Flatten()


@keras.saving.register_keras_serializable(package="tfaux_tests")
def tiny_head():
    """A registered head factory (no argument -> layer)."""
    return keras.layers.Dense(3)


def round_trip(obj):
    """serialize_keras_object -> JSON text -> deserialize_keras_object."""
    text = json.dumps(keras.saving.serialize_keras_object(obj))
    return keras.saving.deserialize_keras_object(json.loads(text))


def as_json(config):
    """A config as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(config))


def constructor_arguments(cls):
    """Names of the arguments of the most derived strategy constructor (none: Layer's own)."""
    owner = next((c for c in cls.__mro__ if issubclass(c, Strategy) and "__init__" in vars(c)), None)
    if owner is None:
        return set()
    parameters = inspect.signature(owner.__init__).parameters.values()
    return {p.name for p in parameters if p.name != "self" and p.kind is not p.VAR_KEYWORD}


# ---------------------------------------------------------------------- strategies
@pytest.mark.parametrize("name", sorted(strategies.METHODS))
def test_every_method_round_trips_its_constructor_arguments(name):
    strategy = strategies.get(name)
    config = strategy.get_config()
    assert set(config) - LAYER_KEYS == constructor_arguments(type(strategy))
    assert {k: config[k] for k in strategies.METHODS[name].fixed} == strategies.METHODS[name].fixed
    rebuilt = round_trip(strategy)
    assert type(rebuilt) is type(strategy)
    assert rebuilt.get_config() == config


def test_non_default_values_survive_and_a_dropped_key_does_not():
    rebuilt = round_trip(JTDS(use_loss=False, seed=3))
    assert rebuilt.use_loss is False and rebuilt.seed == 3
    config = JTDS(use_loss=False, seed=3).get_config()
    del config["seed"]
    assert JTDS.from_config(config).get_config() != JTDS(use_loss=False, seed=3).get_config()
    combiner = round_trip(AuxiLearn(combiner="linear", init_upper=0.5, skip=False))
    assert (combiner.combiner_name, combiner.init_upper, combiner.skip) == ("linear", 0.5, False)


def test_base_classes_round_trip():
    assert type(round_trip(Strategy(name="plain"))) is Strategy
    assert round_trip(Strategy(name="plain")).name == "plain"


def test_registered_callables_round_trip_and_others_raise():
    strategy = MAXL(psi=2, backbone=tiny_backbone, head_units=(4,), aux_head_fn=tiny_head, entropy_weight=0.1)
    rebuilt = round_trip(strategy)
    assert rebuilt.backbone is tiny_backbone and rebuilt.aux_head_fn is tiny_head
    assert (rebuilt.psi, rebuilt.head_units, rebuilt.entropy_weight) == (2, (4,), 0.1)
    assert round_trip(AuxiLearnLabels(backbone="lenet")).backbone == "lenet"
    with pytest.raises(ValueError, match="'backbone'.*string name or a callable registered"):
        AuxiLearnLabels(backbone=lambda spec: keras.layers.Flatten()).get_config()
    with pytest.raises(ValueError, match="'aux_head_fn'"):
        AuxiLearnLabels(aux_head_fn=models.mlp_head(10)).get_config()
    with pytest.raises(ValueError, match="'head_fn'"):
        DTGAuxL(head_fn=models.mlp_head(10)).get_config()
    dtg = DTGAuxL(activation=keras.activations.tanh, head_fn=tiny_head, pair_group=4)
    assert dtg.get_config()["activation"] == "tanh"
    assert (round_trip(dtg).head_fn, round_trip(dtg).pair_group) == (tiny_head, 4)


# ---------------------------------------------------------------------- solvers and settings
@pytest.mark.parametrize("obj", [hypergrad.Neumann(terms=3), hypergrad.Neumann(terms=0, alpha=0.5),
                                 hypergrad.ConjugateGradient(iterations=4, damping=0.1, tolerance=1e-12),
                                 UpperSettings(optimizer="adam", learning_rate=1e-3, clipnorm=None), MAXL.solver])
def test_solvers_and_upper_settings_round_trip_to_equal_objects(obj):
    rebuilt = round_trip(obj)
    assert type(rebuilt) is type(obj) and rebuilt == obj


# ---------------------------------------------------------------------- backbones
SPEC = {"user": tf.TensorSpec((), tf.int32), "genres": tf.TensorSpec((5,), tf.float32)}


def _images(*shape):
    return np.random.default_rng(0).normal(size=(2,) + shape).astype("float32")


def _records():
    return {"user": np.array([1, 7], "int32"), "genres": _images(5)}


BACKBONES = {
    "convnet4": (lambda: models.convnet4(channels=4), lambda: _images(8, 8, 3)),
    "lenet": (lambda: models.lenet(), lambda: _images(28, 28, 1)),
    "mlp_encoder": (lambda: models.mlp_encoder(units=(8, 4)), lambda: _images(6)),
    "mlp_head": (lambda: models.mlp_head(3, layers=2, hidden=8)(), lambda: _images(6)),
    "resnet18": (lambda: models.resnet18(stem="imagenet"), lambda: _images(8, 8, 3)),
    "wide_resnet": (lambda: models.wide_resnet(depth=10, width=1), lambda: _images(8, 8, 3)),
    "vgg16": (lambda: models.vgg16(), lambda: _images(32, 32, 3)),
    "segnet": (lambda: models.segnet(input_shape=(8, 8, 3), filters=(4, 8)), lambda: _images(8, 8, 3)),
    "autoint": (lambda: models.autoint(SPEC, embedding_dim=4, blocks=2, heads=2, num_bins=16), _records),
    "tabular_encoder": (lambda: models.tabular_encoder(SPEC, dim=4, units=(8,)), _records),
}


def _wrapped(backbone, x):
    """A functional keras.Model around the backbone, inputs shaped like x."""
    if isinstance(x, dict):
        inputs = {n: keras.Input(shape=v.shape[1:], dtype=str(v.dtype), name=n) for n, v in x.items()}
    else:
        inputs = keras.Input(shape=x.shape[1:])
    return keras.Model(inputs, backbone(inputs))


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "resnet18" else n  # ~5 s
                                  for n in sorted(BACKBONES)])
def test_every_backbone_round_trips_with_identical_predictions(name, tmp_path):
    make, data = BACKBONES[name]
    backbone, x = make(), data()
    model = _wrapped(backbone, x)
    expected = model(x, training=False).numpy()

    rebuilt = round_trip(backbone)
    assert type(rebuilt) is type(backbone) and as_json(rebuilt.get_config()) == as_json(backbone.get_config())
    copy = _wrapped(rebuilt, x)
    copy.set_weights(model.get_weights())
    np.testing.assert_array_equal(copy(x, training=False).numpy(), expected)

    path = tmp_path / "backbone.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), expected)
