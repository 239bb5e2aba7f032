"""tf.data pipelines for tfaux: one module per dataset family, one for experimental settings.

    data = pipelines.load("digits", setting=pipelines.Setting(noise_rate=0.4))
    model.fit(data.train_with_dev(64), validation_data=data.val(256), ...)

Adding a dataset: a module in this package with a function data_dir -> Source and the
line `register("name", fn)` (or `@register("name")`, from pipelines.contract). Every
module of the package is imported here, so it shows up in DATASETS; a module may instead
define `register_all(register)`, which is called once with `register`.
"""

import importlib
import pkgutil

from pipelines.contract import DATASETS, AuxDataset, Source, register
from pipelines.errors import DataError
from pipelines.settings import Setting, make_dataset

CORE = {"contract", "errors", "settings", "rotation"}

for _info in pkgutil.iter_modules(__path__):
    if _info.name not in CORE and not _info.name.startswith("_"):
        _module = importlib.import_module(f"{__name__}.{_info.name}")
        if callable(getattr(_module, "register_all", None)):
            _module.register_all(register)


def load(name, data_dir=None, setting=None) -> AuxDataset:
    """The AuxDataset of registered dataset `name` (read from data_dir) under `setting`."""
    if name not in DATASETS:
        raise DataError(f"Unknown dataset '{name}'; choose one of: {', '.join(sorted(DATASETS))}.")
    return make_dataset(DATASETS[name](data_dir), setting)


__all__ = ["AuxDataset", "DATASETS", "DataError", "Setting", "Source", "load", "make_dataset", "register"]
