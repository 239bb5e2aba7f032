"""Fine-grained classification with many auxiliary tasks: CUB-200-2011 species at K = 5 (default)
or 10 labelled images per class, with the 312 binary attributes of every training image as
auxiliaries (seed 002, Sec. 5.2, Table 1; App. B.1).

    python -m apps.cub_kshot --data_dir=DIR/CUB_200_2011/.. [--shots_per_class=10] \
        [--encoder_weights=resnet18_imagenet.weights.h5] [--method=auxilearn]

Semi-supervised, as the paper states ("auxiliary labels are available for all images but only K
labels per class are available for the main task"): the other training images stay, with their
attributes and no species label (--nodrop_unlabelled). --method=auxilearn (default) is the
Nonlinear row: a monotone MLP over the 313 losses with a skip connection for the main loss and
Softplus activations, "5 layers and 10 units in each layer" (hidden=(10, 10, 10, 10): four hidden
layers of 10 and the output layer; added to --method_args unless it sets `hidden`);
--method_args=combiner=linear / deep_linear are the Linear / Deep linear rows. Baselines of Table
1: --method=stl, equal, uncertainty, dwa, gradnorm, gcs.

Paper defaults: ResNet-18 pretrained on ImageNet, fine-tuned with Adam for 100 epochs with early
stopping on validation; the learning rate and weight decay are grid-searched over {1e-3, 1e-4,
1e-5} and {5e-3, 5e-4, 5e-5}: we take the middle, 1e-4 and 5e-4. Images resized to 256 and
centre-cropped to 224 (training: random crop and flip). The auxiliary (dev) set is 20 images. The
combiner's update is the method's (SGD momentum 0.9 at 1e-3, one of the paper's {1e-2, 1e-3}).
Pretrained weights are never downloaded: pass --encoder_weights with a Keras .weights.h5 file of
an ImageNet ResNet-18 you have (imagenet stem); without it the network starts from random weights.

Where we differ: validation is 20% of the training split (the paper splits the official test set
into 2,897 validation and 2,897 test images; pipelines.cub keeps the official test set whole), so
~24 images per class remain for the K shots and the attribute-only examples; the dev set comes out
of validation rather than out of the labelled training images; batch 32 (the paper gives none;
apps.cub_attributes' batch); the upper step every 20 lower steps (not given); the paper's auxiliary
loss scale tau = 0.1 (every method, App. B.1) is not applied, the combiner's weight decay is the
method's 1e-4 rather than the paper's {1e-5, 5e-5}, and GCS gates each of the 312 auxiliaries
rather than their sum. Same flags and outputs as apps.train; only the defaults differ.
"""

from absl import app

from apps import experiment
from apps.flags import define_flags

COMBINER_HIDDEN = (10, 10, 10, 10)

define_flags(method="auxilearn", dataset="cub", rotation=False, encoder="resnet18", optimizer="adam", lr=1e-4,
             weight_decay=5e-4, epochs=100, batch_size=32, shots_per_class=5, drop_unlabelled=False, dev_size=20,
             output_dir="runs/cub_kshot",
             method_defaults=lambda f: {"hidden": COMBINER_HIDDEN} if f.method == "auxilearn" else {})


if __name__ == "__main__":
    app.run(experiment.main)
