"""scikit-learn's bundled 8x8 digits (1,797 images, 10 classes): offline, no data_dir."""

import numpy as np

from pipelines.contract import Source, register
from pipelines.errors import DataError
from tfaux.tasks import Task


@register("digits")
def load_digits(data_dir=None):
    """Digits as uint8 [N, 8, 8, 1] images (sklearn's 0..16 values scaled to 0..255); bundled, so a
    data_dir is refused (it would be silently ignored)."""
    from sklearn.datasets import load_digits as sk_load

    if data_dir is not None:
        raise DataError(f"--data_dir={data_dir} was given, but dataset 'digits' is bundled with scikit-learn and "
                        "reads no files; leave --data_dir unset or choose a dataset that reads it.")
    bunch = sk_load()
    pixels = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return Source(name="digits", tasks=[Task("label", role="primary", kind="classification", num_classes=10)],
                  features=pixels, labels={"label": bunch.target.astype(np.int32)},
                  is_image=True, image_shape=(8, 8, 1))
