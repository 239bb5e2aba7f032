"""Stanford Cars (pipelines.cars): the official devkit layout written with scipy in the devkit's
struct layout, the TFDS fallback (mocked), bad files named in one sentence."""

import numpy as np
import pytest
import scipy.io
import tensorflow as tf
import tensorflow_datasets as tfds

import pipelines
from pipelines import cars
from test_pipelines_datasets import expect_error, write, write_image

NAMES = [f"Make {i} Model {i} {2000 + i % 13}" for i in range(1, 197)]
TRAIN = [("00001.jpg", 1), ("00002.jpg", 196), ("00003.jpg", 7), ("00004.jpg", 1), ("00005.jpg", 196),
         ("00006.jpg", 7)]
TEST = [("00001.jpg", 7), ("00002.jpg", 1), ("00003.jpg", 196)]
FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")


def annotations(rows, with_class=True):
    """A 1 x N MATLAB struct array as in cars_train_annos.mat (uint8 / uint16 scalars, file name)."""
    fields = [f for f in FIELDS if with_class or f != "class"]
    ann = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for i, (fname, cls) in enumerate(rows):
        values = {"bbox_x1": np.array([[2]], np.uint8), "bbox_y1": np.array([[3]], np.uint8),
                  "bbox_x2": np.array([[18]], np.uint16), "bbox_y2": np.array([[14]], np.uint16),
                  "class": np.array([[cls]], np.uint8), "fname": np.array([fname])}
        ann[0, i] = tuple(values[f] for f in fields)
    return ann


def class_names(names):
    cell = np.empty((1, len(names)), object)
    for i, n in enumerate(names):
        cell[0, i] = n
    return cell


def make_cars(root, train=TRAIN, test=TEST, test_in_devkit=False):
    """The official layout: cars_train/, cars_test/, devkit/*.mat, cars_test_annos_withlabels.mat."""
    (root / "devkit").mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / "devkit" / "cars_meta.mat", {"class_names": class_names(NAMES)})
    scipy.io.savemat(root / "devkit" / "cars_train_annos.mat", {"annotations": annotations(train)})
    scipy.io.savemat(root / "devkit" / "cars_test_annos.mat", {"annotations": annotations(test, with_class=False)})
    labelled = root / ("devkit" if test_in_devkit else "") / "cars_test_annos_withlabels.mat"
    scipy.io.savemat(labelled, {"annotations": annotations(test)})
    for folder, rows in (("cars_train", train), ("cars_test", test)):
        for i, (fname, _) in enumerate(rows):
            write_image(root / folder / fname, 20 + 4 * i, 30, png=(i == 1))  # any size, a PNG named .jpg
    return root


@pytest.fixture
def cars_dir(tmp_path):
    return make_cars(tmp_path / "stanford_cars")


def test_raw_devkit_layout(cars_dir):
    s = cars.load_cars(str(cars_dir.parent), image_size=32)  # found in its 'stanford_cars/' folder
    s.validate()
    assert [t.name for t in s.tasks] == ["car"] and s.tasks[0].num_classes == 196 and s.tasks[0].is_primary
    np.testing.assert_array_equal(s.labels["car"], [0, 195, 6, 0, 195, 6, 6, 0, 195])
    assert list(s.official_split) == ["train"] * 6 + ["test"] * 3
    assert s.features[0].endswith("cars_train/00001.jpg") and s.features[6].endswith("cars_test/00001.jpg")
    for f in s.features[[0, 1, 8]]:  # non-square JPEG and PNG files, all 32 x 32 in [0, 1]
        x = s.decode(tf.constant(f))
        assert x.shape == (32, 32, 3) and 0.0 <= float(tf.reduce_min(x)) <= float(tf.reduce_max(x)) <= 1.0
        assert s.augment(x, tf.constant([1, 2], tf.int64)).shape == (32, 32, 3)
    assert s.image_shape == (32, 32, 3) and s.is_image


def test_test_labels_in_devkit_folder(tmp_path):
    s = cars.load_cars(str(make_cars(tmp_path, test_in_devkit=True)))
    np.testing.assert_array_equal(s.labels["car"][6:], [6, 0, 195])
    assert s.image_shape == (224, 224, 3)


def test_registered_and_loaded_with_the_official_split(cars_dir):
    assert "cars196" in pipelines.DATASETS
    assert pipelines.options("cars196", "image_size=16") == {"image_size": 16}
    setting = pipelines.Setting(rotation=False, val_fraction=0.34, dev_size=1)
    data = pipelines.load("cars196", data_dir=str(cars_dir), setting=setting, options={"image_size": 16})
    assert (data.num_train, data.num_dev, data.num_val, data.num_test) == (4, 1, 1, 3)
    batch = next(iter(data.test(8)))
    assert batch["x"].shape == (3, 16, 16, 3)
    assert sorted(batch["labels"]["car"].numpy().tolist()) == [0, 6, 195]


def test_bad_files_are_named(cars_dir):
    devkit = cars_dir / "devkit"
    scipy.io.savemat(devkit / "cars_meta.mat", {"class_names": class_names(NAMES[:195])})
    expect_error(lambda: cars.load_cars(str(cars_dir)), "cars_meta.mat", "195")
    scipy.io.savemat(devkit / "cars_meta.mat", {"names": class_names(NAMES)})
    expect_error(lambda: cars.load_cars(str(cars_dir)), "cars_meta.mat", "class_names")
    (devkit / "cars_meta.mat").unlink()
    expect_error(lambda: cars.load_cars(str(cars_dir)), "cars_meta.mat")
    scipy.io.savemat(devkit / "cars_meta.mat", {"class_names": class_names(NAMES)})

    write(devkit / "cars_train_annos.mat", "not a MATLAB file")
    expect_error(lambda: cars.load_cars(str(cars_dir)), "cars_train_annos.mat")
    scipy.io.savemat(devkit / "cars_train_annos.mat", {"annotations": annotations([("00001.jpg", 197)])})
    expect_error(lambda: cars.load_cars(str(cars_dir)), "cars_train_annos.mat", "197")
    scipy.io.savemat(devkit / "cars_train_annos.mat", {"annotations": annotations([("00001.jpg", 0)])})
    expect_error(lambda: cars.load_cars(str(cars_dir)), "cars_train_annos.mat", "1..196")
    scipy.io.savemat(devkit / "cars_train_annos.mat", {"annotations": annotations([("09999.jpg", 3)])})
    expect_error(lambda: cars.load_cars(str(cars_dir)), "09999.jpg")
    scipy.io.savemat(devkit / "cars_train_annos.mat", {"annotations": annotations(TRAIN)})

    labelled = cars_dir / "cars_test_annos_withlabels.mat"  # the unlabelled devkit file in its place
    scipy.io.savemat(labelled, {"annotations": annotations(TEST, with_class=False)})
    expect_error(lambda: cars.load_cars(str(cars_dir)), "cars_test_annos_withlabels.mat", "class")
    labelled.unlink()
    expect_error(lambda: cars.load_cars(str(cars_dir)), "cars_test_annos_withlabels.mat")


def test_bad_options_and_directories(cars_dir, tmp_path):
    expect_error(lambda: cars.load_cars(str(cars_dir), image_size=0), "image_size")
    expect_error(lambda: cars.load_cars(str(tmp_path / "no_such_dir")), "no_such_dir")
    empty = tmp_path / "empty"
    empty.mkdir()
    expect_error(lambda: cars.load_cars(str(empty)), "cars196", "--data_dir", "devkit")


def test_tfds_copy():
    """A prepared `cars196` copy (mocked: TFDS's own mock draws invalid random boxes), the image
    kept encoded (SkipDecoding) until the pipeline decodes it."""
    labels = {"train": [0, 195, 4], "test": [7, 0]}

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        n = len(labels[str(split)])
        jpeg = [tf.io.encode_jpeg(tf.fill([30 + 5 * i, 40, 3], tf.constant(40 * i, tf.uint8))) for i in range(n)]
        return tf.data.Dataset.from_tensor_slices({
            "image": tf.stack(jpeg), "label": tf.constant(labels[str(split)], tf.int64),
            "bbox": tf.zeros([n, 4], tf.float32), "id": tf.constant([f"{i:05d}" for i in range(n)])})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        s = cars.load_cars(None, image_size=48)
    s.validate()
    assert list(s.official_split) == ["train"] * 3 + ["test"] * 2
    np.testing.assert_array_equal(s.labels["car"], [0, 195, 4, 7, 0])
    x = s.decode(tf.constant(s.features[1]))
    assert x.shape == (48, 48, 3) and abs(float(tf.reduce_mean(x)) - 40 / 255) < 0.02

