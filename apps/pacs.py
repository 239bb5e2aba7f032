"""PACS multi-source domain generalisation with the source domains as reweighted auxiliary
tasks and a few labelled target images (seed 003, ARML, Sec. 3.2, Table 4, App. B.3).

    python -m apps.pacs --data_dir=/path/to/PACS [--dataset=pacs_art_painting] [--method=...]

Dataset (pipelines.pacs): "pacs" is sketch as target with 5 labelled images per class;
"pacs_<domain>" picks another target (photo, art_painting, cartoon, sketch) with 5 shots and
"pacs_<domain>_1shot" with 1 (or --dataset=pacs --dataset_args=target_domain="photo",shots=3 for any
N_m). Primary task "target" (7-way, on the target domain), one auxiliary 7-way task per source
domain, each with its own head; source images split 9 train : 1 val, test on the rest of the
target domain; model selection on the target head's accuracy on the source val images.
--shots_per_class, --label_fraction, --num_labelled, --dev_per_class and --noise_rate are refused
(the loader picks the shots). --data_dir: the folder with `<domain>/<class>/<images>`, directly or under `kfold/`.

Defaults after App. B.3: ResNet-18 (224 x 224 input, ImageNet stem; --encoder_weights to start
from weights you have), 100 epochs, batch 128, SGD (momentum 0.9) at learning rate 1e-3, dropped to
1e-4 after 80 epochs, no rotation task. --method defaults to arml, the paper's method (the
source-domain weights matched to the target's gradient on the shots); --method=equal is the
joint-training "JT" baseline (every task weight 1, the target head trained on the shots). Same flags and outputs as apps.train;
only the defaults differ.
"""

from absl import app

from apps import experiment
from apps.flags import define_flags

define_flags(method="arml", dataset="pacs", rotation=False, epochs=100, batch_size=128, lr=1e-3, optimizer="sgd",
             lr_decay="80=0.1", encoder="resnet18", output_dir="runs/pacs")

if __name__ == "__main__":
    app.run(experiment.main)
