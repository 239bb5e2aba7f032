"""Only a fraction (or K per class) of primary labels kept (seed 000 semi-supervised, seed 002 few-shot).

    python -m apps.semi_supervised --method=jtds [--data_dir=...] [--helpfull]

Same flags and outputs as apps.train; only the defaults differ.
"""

from absl import app

from apps import experiment
from apps.flags import define_flags

define_flags(label_fraction=0.2, output_dir="runs/semi_supervised")

if __name__ == "__main__":
    app.run(experiment.main)
