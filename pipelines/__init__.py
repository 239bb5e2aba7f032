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
from tfaux import keyword_args

CORE = {"contract", "errors", "settings", "rotation", "aux_source"}

for _info in pkgutil.iter_modules(__path__):
    if _info.name not in CORE and not _info.name.startswith("_"):
        _module = importlib.import_module(f"{__name__}.{_info.name}")
        if callable(getattr(_module, "register_all", None)):
            _module.register_all(register)


def options(name, text):
    """{option: value} of `--dataset_args=k=v,...` for dataset `name`, checked against its loader's
    keyword arguments (tfaux.keyword_args; DataError naming the flag otherwise)."""
    if name not in DATASETS:
        raise DataError(f"Unknown dataset '{name}'; choose one of: {', '.join(sorted(DATASETS))}.")
    try:
        return keyword_args.parse(text, keyword_args.accepted(DATASETS[name], skip=("data_dir",)),
                                  "--dataset_args", f"dataset '{name}'")
    except keyword_args.KeywordArgsError as e:
        raise DataError(str(e)) from None


def load(name, data_dir=None, setting=None, aux_data_dir=None, options=None) -> AuxDataset:
    """The AuxDataset of registered dataset `name` (read from data_dir, with the loader's keyword
    `options`) under `setting`; setting.aux_dataset, if set, is read from aux_data_dir (None:
    that loader's default)."""
    if name not in DATASETS:
        raise DataError(f"Unknown dataset '{name}'; choose one of: {', '.join(sorted(DATASETS))}.")
    options = dict(options or {})
    unknown = sorted(set(options) - set(keyword_args.accepted(DATASETS[name], skip=("data_dir",))))
    if unknown:
        raise DataError(f"Dataset '{name}' has no option {unknown[0]!r} (--dataset_args).")
    aux_name = setting.aux_dataset if setting is not None else None
    if aux_name is not None and aux_name not in DATASETS:
        aux_source.resolve(aux_name)  # raises the DataError naming --aux_dataset, before any reading
    source = DATASETS[name](data_dir, **options)
    aux = aux_source.resolve(aux_name, aux_data_dir) if aux_name is not None else None
    return make_dataset(source, setting, aux_source=aux)


__all__ = ["AuxDataset", "DATASETS", "DataError", "Setting", "Source", "load", "make_dataset", "options", "register"]
