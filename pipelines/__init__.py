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

from pipelines import aux_source
from pipelines.contract import DATASETS, AuxDataset, Source, register
from pipelines.errors import DataError
from pipelines.settings import Setting, make_dataset

CORE = {"contract", "errors", "settings", "rotation", "aux_source"}

for _info in pkgutil.iter_modules(__path__):
    if _info.name not in CORE and not _info.name.startswith("_"):
        _module = importlib.import_module(f"{__name__}.{_info.name}")
        if callable(getattr(_module, "register_all", None)):
            _module.register_all(register)


def load(name, data_dir=None, setting=None, aux_data_dir=None) -> AuxDataset:
    """The AuxDataset of registered dataset `name` (read from data_dir) under `setting`;
    setting.aux_dataset, if set, is read from aux_data_dir (None: that loader's default)."""
    if name not in DATASETS:
        raise DataError(f"Unknown dataset '{name}'; choose one of: {', '.join(sorted(DATASETS))}.")
    aux_name = setting.aux_dataset if setting is not None else None
    if aux_name is not None and aux_name not in DATASETS:
        aux_source.resolve(aux_name)  # raises the DataError naming --aux_dataset, before any reading
    source = DATASETS[name](data_dir)
    aux = aux_source.resolve(aux_name, aux_data_dir) if aux_name is not None else None
    return make_dataset(source, setting, aux_source=aux)


__all__ = ["AuxDataset", "DATASETS", "DataError", "Setting", "Source", "load", "make_dataset", "register"]
