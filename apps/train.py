"""Train one method on one dataset: python -m apps.train --method=jtds --dataset=digits ...

Writes metrics.json, saved_model/ (primary task only), schedule.npz (scheduler
methods), best.weights.h5 and TensorBoard logs under --output_dir.
"""

from absl import app, logging

from apps import experiment
from apps.flags import FLAGS, define_flags

define_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    experiment.main_with_errors(FLAGS)


if __name__ == "__main__":
    app.run(main)
