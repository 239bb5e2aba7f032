"""How a bi-level method's own parameters phi move, given their hypergradient.

Convention (the papers' and their reference code's, so that their settings are typed as
published): the upper optimizer, the clip norm and the weight decay all act on

    g = (1 / alpha) * dL_dev/dphi

where dL_dev/dphi is the true implicit hypergradient (tfaux.hypergrad) and alpha the
Neumann step size (default: the lower learning rate). The reference code
(AuxiLearn's `implicit_diff.py`, copied by JTDS) omits Neumann's leading alpha, so its
hypergradient is exactly g. The update is then, as in its PyTorch loop:

    g <- clip_by_global_norm(g, clipnorm);  g <- g + weight_decay * phi;  phi <- optimizer(phi, g)

Defaults are the method's reference settings (`Strategy.upper_defaults`):
JTDS / N-JTDS: SGD(0.01, momentum 0.9), weight decay 5e-5, clip 10 (forchchch/JTDS);
AuxiLearn: SGD(1e-3, momentum 0.9), weight decay 1e-4, clip 25 (its NYUv2 combiner runs).
"""

import dataclasses

import keras

OPTIMIZERS = ("sgd", "adam")


@keras.saving.register_keras_serializable(package="tfaux")
@dataclasses.dataclass(frozen=True)
class UpperSettings:
    """Upper-level update of phi, in the reference scale g = dL_dev/dphi / alpha.

    optimizer:     "sgd" (with `momentum`) or "adam" (PyTorch's epsilon 1e-8).
    learning_rate: step size on g.
    momentum:      SGD momentum (ignored by Adam).
    weight_decay:  L2 coefficient added to the clipped g (PyTorch's coupled weight decay).
    clipnorm:      global-norm clip of g; 0 or None: no clipping.
    """

    optimizer: str = "sgd"
    learning_rate: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 5e-5
    clipnorm: float | None = 10.0

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"upper optimizer must be one of {OPTIMIZERS}, got '{self.optimizer}'.")
        for name in ("learning_rate", "momentum", "weight_decay"):
            value = getattr(self, name)
            if not value >= 0.0 or value == float("inf"):  # also rejects NaN
                raise ValueError(f"upper {name} must be a finite number >= 0, got {value}.")
        if self.clipnorm is not None and (not self.clipnorm >= 0.0 or self.clipnorm == float("inf")):
            raise ValueError(f"upper clipnorm must be a finite number >= 0 (0: no clipping), got {self.clipnorm}.")

    def get_config(self):
        """The settings' fields, for Keras serialization."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def override(self, **values):
        """A copy with every value that is not None replaced (unset flags keep the method's)."""
        return dataclasses.replace(self, **{k: v for k, v in values.items() if v is not None})

    def make_optimizer(self):
        """The Keras optimizer of phi (build it under the distribution scope)."""
        if self.optimizer == "adam":
            return keras.optimizers.Adam(self.learning_rate, epsilon=1e-8)
        return keras.optimizers.SGD(self.learning_rate, momentum=self.momentum)
