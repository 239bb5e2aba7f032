"""scikit-learn's bundled 8x8 digits (1,797 images, 10 classes): offline, no data_dir."""

import numpy as np

from pipelines.contract import Source, register
from pipelines.errors import DataError
from tfaux.tasks import Task


@register("digits")
def load_digits(data_dir=None):
    """Digits as float32 [N, 8, 8, 1] images holding sklearn's own 0..16 values (pixel_max 16);
    bundled, so a data_dir is refused (it would be silently ignored)."""
    from sklearn.datasets import load_digits as sk_load

    if data_dir is not None:
        raise DataError(f"--data_dir={data_dir} was given, but dataset 'digits' is bundled with scikit-learn and "
                        "reads no files; leave --data_dir unset or choose a dataset that reads it.")
    bunch = sk_load()
    return Source(name="digits", tasks=[Task("label", role="primary", kind="classification", num_classes=10)],
                  features=bunch.images.astype(np.float32)[..., None], labels={"label": bunch.target.astype(np.int32)},
                  is_image=True, image_shape=(8, 8, 1), pixel_max=16.0)
