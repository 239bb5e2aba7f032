"""One file per method, all on the protocol of `base.Strategy`."""

from tfaux.strategies.auxilearn import AuxiLearn
from tfaux.strategies.base import Context, Strategy, ThetaVariables
from tfaux.strategies.equal import Equal
from tfaux.strategies.gcs import GCS
from tfaux.strategies.jtds import JTDS
from tfaux.strategies.njtds import NJTDS
from tfaux.strategies.stl import STL

BY_NAME = {
    "stl": STL,
    "equal": Equal,
    "jtds": JTDS,
    "jtds_only_task": lambda: JTDS(use_feature=False, use_loss=False),
    "jtds_no_loss": lambda: JTDS(use_loss=False),
    "jtds_no_feature": lambda: JTDS(use_feature=False),
    "jtds_normalized": lambda: JTDS(normalize=True),
    "njtds": NJTDS,
    "auxilearn": AuxiLearn,
    "gcs": GCS,
}


def get(name, **kwargs):
    """A strategy by its command-line name."""
    if name not in BY_NAME:
        raise ValueError(f"Unknown method '{name}'; choose one of: {', '.join(sorted(BY_NAME))}.")
    return BY_NAME[name](**kwargs)
