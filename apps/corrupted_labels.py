"""Primary labels uniformly corrupted; the dev set stays clean (seed 000, Table 3 / Fig. 3).

    python -m apps.corrupted_labels --method=jtds [--data_dir=...] [--helpfull]

Same flags and outputs as apps.train; only the defaults differ.
"""

from absl import app

from apps import experiment
from apps.flags import define_flags

define_flags(noise_rate=0.4, output_dir="runs/corrupted_labels")

if __name__ == "__main__":
    app.run(experiment.main)
