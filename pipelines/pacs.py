"""PACS multi-source domain generalisation with a few labelled target images (seed 003, ARML,
Sec. 3.2 "Domain Generalization", Table 4, Fig. 3-4 and App. B.3).

PACS (Li et al., ICCV 2017) has four domains, photo, art_painting, cartoon and sketch, each with
the same 7 classes: dog, elephant, giraffe, guitar, horse, house, person (labels 0..6 in that
order). One domain is the target, the three others are sources.

Tasks (one head each, as every tfaux task has its own head on the shared encoder; the paper's
general model, Sec. 2, is also "a shared backbone and different heads for each task", but it
does not say whether the PACS source domains share one classifier; here they do not):

    "target"            primary, 7-way: the target domain's class. Labelled (mask 1) for training
                        only on `shots` images per class of the target domain (the paper's N_m
                        "extra labelled images", N_m = 1..5), chosen with np.random.default_rng(0).
    "<source domain>"   auxiliary, 7-way, one per source domain in the order photo, art_painting,
                        cartoon, sketch (e.g. "photo"): the class of that domain's images, mask 1 on
                        that domain's images only (label 0, masked, elsewhere).

Splits (Source.official_split; the paper follows Li et al.: source images 9 train : 1 val, test on
the whole target domain):

    train  the source domains' images less their val part, and the `shots` labelled images per class
           of the target domain;
    val    round(n / 10) images of every (source domain, class) folder of n images, drawn with
           np.random.default_rng([0, domain index]) (the same images whichever domain is target);
    test   every other target-domain image (the paper's "whole target domain" less the 7 * shots
           labelled ones, which are training data here).

The rest of the target domain is not in train at all (domain generalisation: no unlabelled target
data is seen); with --rotation the rotation task therefore sees source images and the shots only.

Model selection (the paper is silent; Li et al. select on the source-domain val split): the val
images carry the "target" label too (mask 1) besides their own domain's, so the selection metric,
the primary ("target") head's accuracy on val, is the target classifier's accuracy on held-out
*source* images. No target-domain label beyond the shots is used for training or selection. The
dev split (the upper level of bi-level methods, --dev_size) is carved out of val, so it holds
source images labelled for "target" as well; the labelled target images themselves are the train
examples with a primary label, i.e. the `reordered` stream (AuxDataset.train_with_reordered).

What the primary labels are used for depends on the method: with a plain weighted sum (equal) the
target head and the encoder learn from the shots (the paper's joint training, "JT"); the paper's
"Baseline + ARML" updates theta with the source losses only and uses the shots only for the
task weights. --shots_per_class, --label_fraction, --num_labelled, --dev_per_class and
--noise_rate are refused with this dataset (Source.fixed_settings): the loader already picks the
shots, and those settings stratify over every training row (source rows included), so they would
drop or mis-pick the target labels.

Raw files only (there is no TFDS builder): --data_dir is a folder with `<domain>/<class>/<images>`
for the four domains, directly or under `kfold/`, `PACS/` or `PACS/kfold/` (the usual image
distribution; the official HDF5 files and split lists are not read). Images (JPEG/PNG, 227 x 227 in
the distribution) are centre-cropped to a square and resized to image_size (default 224); training
augmentation: a random crop of 80-100 % of the image's area (aspect ratio 3/4..4/3, as
torchvision's RandomResizedCrop(scale=(0.8, 1)) of JiGen, ref. [8], which the paper follows)
resized back, and a random horizontal flip.

Registered: "pacs" (target sketch, 5 shots), "pacs_<domain>" (5 shots) and "pacs_<domain>_1shot"
for each domain, e.g. pacs_art_painting, pacs_photo_1shot (shorthands for
--dataset=pacs --dataset_args=target_domain="art_painting" and ...="photo",shots=1). Source.name is pacs_<target> (5 shots) or pacs_<target>_<k>shot.
"""

import os

import numpy as np
import tensorflow as tf

from pipelines import images
from pipelines.contract import Source, register
from pipelines.errors import DataError
from tfaux.tasks import Task

DOMAINS = ("photo", "art_painting", "cartoon", "sketch")
CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
EXTENSIONS = (".jpg", ".jpeg", ".png")
ROOTS = ("kfold", "PACS/kfold", "PACS", "")  # where the domain folders may lie under --data_dir
VAL_SHARE = 0.1
SHOT_SEED = 0
HINT = ("--data_dir with the PACS image folders '<domain>/<class>/<image>' (domains "
        f"{', '.join(DOMAINS)}; classes {', '.join(CLASSES)}), directly or under 'kfold/'")


def _root(data_dir):
    """The folder holding the domain folders: the first of ROOTS with all four, else a DataError
    naming the missing domain(s) of the first that has any."""
    root, missing = images.root_with_folders(data_dir, ROOTS, DOMAINS)
    if root is None:
        raise DataError(f"pacs: no PACS domain folder found in '{data_dir}'; pass {HINT}.")
    if missing:
        raise DataError(f"pacs: missing domain folder{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(repr(m) for m in missing)} in '{root}'.")
    return root


def _images(folder, what):
    """Sorted paths of the image files of a class folder (a DataError when missing or empty)."""
    if not os.path.isdir(folder):
        raise DataError(f"pacs: missing class folder '{what}' at '{folder}'.")
    names = sorted(n for n in os.listdir(folder)
                   if not n.startswith(".") and n.lower().endswith(EXTENSIONS)
                   and os.path.isfile(os.path.join(folder, n)))
    if not names:
        raise DataError(f"pacs: class folder '{what}' at '{folder}' holds no image "
                        f"({', '.join(EXTENSIONS)}).")
    return [os.path.join(folder, n) for n in names]


def random_crop_flip(min_area=0.8, aspect=(3 / 4, 4 / 3)):
    """augment(x, seed): a random crop covering min_area..1 of the image's area with an aspect
    ratio in `aspect` (the whole image when none is drawn in 10 tries), resized back, then a
    random horizontal flip (torchvision RandomResizedCrop(scale=(min_area, 1)) + flip)."""
    def augment(x, seed):
        h, w, _ = x.shape
        box_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(x), bounding_boxes=tf.zeros([1, 0, 4]), seed=box_seed, min_object_covered=0.0,
            aspect_ratio_range=aspect, area_range=(min_area, 1.0), max_attempts=10,
            use_image_if_no_bounding_boxes=True)
        x = tf.image.resize(tf.slice(x, begin, size), [h, w])
        return tf.image.stateless_random_flip_left_right(x, seed=flip_seed)
    return augment


def _check_options(target_domain, shots, image_size):
    if target_domain not in DOMAINS:
        raise DataError(f"pacs option 'target_domain' must be one of {', '.join(DOMAINS)}, got {target_domain!r}.")
    for name, value, low in (("shots", shots, 1), ("image_size", image_size, 8)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise DataError(f"pacs option '{name}' must be an integer >= {low}, got {value!r}.")


def load_pacs(data_dir=None, target_domain="sketch", shots=5, image_size=224):
    """PACS with `target_domain` as the primary task "target" (`shots` labelled images per class
    for training, the rest its test split) and every other domain as an auxiliary 7-way task
    named after it; see the module docstring for splits, masks and model selection."""
    _check_options(target_domain, shots, image_size)
    if data_dir is None:
        raise DataError(f"pacs has no TFDS source; pass {HINT}.")
    images.check_dir(data_dir, "pacs")
    root = _root(data_dir)
    sources = [d for d in DOMAINS if d != target_domain]
    paths, label, domain, split = [], [], [], []
    shot_rng = np.random.default_rng(SHOT_SEED)
    for d in DOMAINS:  # fixed order: the draws do not depend on listing order or the target
        val_rng = np.random.default_rng([SHOT_SEED, DOMAINS.index(d)])
        for c, name in enumerate(CLASSES):
            files = _images(os.path.join(root, d, name), f"{d}/{name}")
            n = len(files)
            where = np.full(n, "train", dtype="<U5")
            if d == target_domain:
                if n <= shots:
                    raise DataError(f"pacs: target domain '{d}' has {n} image{'s' if n != 1 else ''} of class "
                                    f"'{name}', but shots={shots} needs more ({shots} labelled, the rest tested).")
                where[:] = "test"
                where[shot_rng.choice(n, shots, replace=False)] = "train"
            else:
                where[val_rng.choice(n, round(VAL_SHARE * n), replace=False)] = "val"
            paths += files
            label += [c] * n
            domain += [DOMAINS.index(d)] * n
            split.append(where)
    paths, label, domain, split = np.array(paths), np.array(label, np.int64), np.array(domain), np.concatenate(split)
    is_target = domain == DOMAINS.index(target_domain)
    tasks = [Task("target", role="primary", num_classes=len(CLASSES))]
    labels = {"target": label}
    masks = {"target": is_target | (split == "val")}  # val: source images, scored on the target head
    for d in sources:
        of_d = domain == DOMAINS.index(d)
        tasks.append(Task(d, role="auxiliary", num_classes=len(CLASSES)))
        labels[d] = np.where(of_d, label, 0)
        masks[d] = of_d
    if not np.any(split == "val"):
        raise DataError(f"pacs: the source domains in '{root}' are too small for a validation split "
                        f"(round(n / 10) of a class folder's n images go to val, so some folder needs 6 or more).")
    name = f"pacs_{target_domain}" + ("" if shots == 5 else f"_{shots}shot")
    return Source(name=name, tasks=tasks, features=paths, labels=labels,
                  official_split=split, masks=masks,
                  decode=images.make_decode(lambda img: images.square_crop_resize(img, image_size), True),
                  is_image=True, image_shape=(image_size, image_size, 3), augment=random_crop_flip(),
                  fixed_settings={f: FIXED_BY_LOADER for f in ("shots_per_class", "label_fraction", "num_labelled",
                                                               "dev_per_class", "noise_rate")})


FIXED_BY_LOADER = ("its loader picks the labelled target images (set their number with "
                   "--dataset_args=shots=N) and takes validation from the source domains")


def _variant(name, **options):
    """A named loader fn(data_dir) for load_pacs with fixed options (names carry the options)."""
    def load(data_dir=None):
        return load_pacs(data_dir, **options)
    load.__name__ = load.__qualname__ = f"load_{name}"
    load.__doc__ = f"PACS with {options} (pipelines.pacs.load_pacs)."
    return load


VARIANTS = {"pacs": dict(target_domain="sketch", shots=5)}
for _d in DOMAINS:
    VARIANTS[f"pacs_{_d}"] = dict(target_domain=_d, shots=5)
    VARIANTS[f"pacs_{_d}_1shot"] = dict(target_domain=_d, shots=1)

register("pacs", load_pacs)
for _name, _options in VARIANTS.items():
    if _name != "pacs":
        register(_name, _variant(_name, **_options))
