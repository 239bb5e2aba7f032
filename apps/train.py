"""Train one method on one dataset: python -m apps.train --method=jtds --dataset=digits ...

Writes metrics.json, saved_model/ (primary task only), schedule.npz (scheduler
methods), best.weights.h5, TensorBoard logs and a crash-safe epoch backup (tfaux.backup)
under --output_dir. `--helpfull` documents every flag.
"""

from absl import app

from apps import experiment
from apps.flags import define_flags

define_flags()

if __name__ == "__main__":
    app.run(experiment.main)
