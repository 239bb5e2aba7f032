"""Rating regression with CTR (rating > 3) as auxiliary task, AutoInt backbone (seed 000: MovieLens, Amazon).

    python -m apps.recommendation --method=jtds [--data_dir=...] [--helpfull]

Same flags and outputs as apps.train; only the defaults differ.
"""

from absl import app

from apps import experiment
from apps.flags import define_flags

define_flags(dataset="movielens_100k", epochs=20, batch_size=1024,
             encoder="autoint", output_dir="runs/recommendation")

if __name__ == "__main__":
    app.run(experiment.main)
