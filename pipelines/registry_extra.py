"""Registers the image, rating and review datasets of this package (defaults of every option)."""

from pipelines.amazon import load_amazon
from pipelines.celeb_a import load_celeb_a
from pipelines.cifar import load_cifar10, load_cifar100
from pipelines.cub import load_cub
from pipelines.movielens import load_movielens_1m, load_movielens_100k, load_movielens_latest_small
from pipelines.multi_mnist import load_multi_mnist
from pipelines.oxford_pet import load_oxford_pet
from pipelines.svhn import load_svhn

LOADERS = {
    "multi_mnist": load_multi_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "svhn": load_svhn,
    "celeb_a": load_celeb_a,
    "oxford_iiit_pet": load_oxford_pet,
    "cub": load_cub,
    "movielens_100k": load_movielens_100k,
    "movielens_1m": load_movielens_1m,
    "movielens_latest_small": load_movielens_latest_small,
    "amazon": load_amazon,
}


def register_all(register):
    """Call register(name, fn) for each loader; fn(data_dir, **options) -> Source."""
    for name, fn in LOADERS.items():
        register(name, fn)
