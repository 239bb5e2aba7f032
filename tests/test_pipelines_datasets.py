"""Dataset loaders: raw files in each dataset's official format, TFDS (mocked), real ML-100K, bad input."""

import gzip
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from pipelines import amazon, celeb_a, cifar, cub, movielens, multi_mnist, oxford_pet, registry_extra, svhn
from pipelines.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ML100K = SHARED / "ml-100k"
MNIST = SHARED / "mnist"
RNG = np.random.default_rng(0)


def write(path, text, encoding="utf-8"):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return path


def write_image(path, h=20, w=16, png=False):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = tf.constant(RNG.integers(0, 256, (h, w, 3)), tf.uint8)
    path.write_bytes((tf.io.encode_png(img) if png else tf.io.encode_jpeg(img)).numpy())


def checked(source, tasks):
    source.validate()
    assert [t.name for t in source.tasks][:len(tasks)] == tasks
    assert source.tasks[0].is_primary and all(not t.is_primary for t in source.tasks[1:])
    return source


def expect_error(fn, *names):
    with pytest.raises(DataError) as e:
        fn()
    for name in names:
        assert str(name) in str(e.value), str(e.value)
    return str(e.value)


# ----------------------------------------------------------------------------- CIFAR

def cifar_images(n):
    x = RNG.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return x, x.transpose(0, 3, 1, 2).reshape(n, -1)  # the files store rows of R, G, B planes


@pytest.fixture
def cifar10_py(tmp_path):
    d, xs, ys = tmp_path / "cifar-10-batches-py", [], []
    d.mkdir()
    for b in cifar.C10_BATCHES:
        x, rows = cifar_images(3)
        y = RNG.integers(0, 10, 3).tolist()
        with open(d / b, "wb") as f:
            pickle.dump({b"data": rows, b"labels": y, b"batch_label": b"x"}, f, protocol=2)
        xs.append(x), ys.extend(y)
    return tmp_path, np.concatenate(xs), np.array(ys)


def test_cifar10_python_pickle(cifar10_py):
    root, x, y = cifar10_py
    s = checked(cifar.load_cifar10(str(root)), ["label"])
    assert s.features.shape == (18, 32, 32, 3) and s.features.dtype == np.uint8
    np.testing.assert_array_equal(s.features, x)
    np.testing.assert_array_equal(s.labels["label"], y)
    assert s.labels["label"].dtype.kind == "i" and s.is_image and s.image_shape == (32, 32, 3)
    assert (s.official_split == "train").sum() == 15 and (s.official_split == "test").sum() == 3
    aug = s.augment(tf.constant(x[0] / 255.0, tf.float32), tf.constant([1, 2], tf.int64))
    assert aug.shape == (32, 32, 3)


def test_cifar10_binary(tmp_path):
    d, xs, ys = tmp_path / "cifar-10-batches-bin", [], []
    d.mkdir()
    for b in cifar.C10_BATCHES:
        x, rows = cifar_images(2)
        y = RNG.integers(0, 10, 2)
        np.concatenate([y[:, None].astype(np.uint8), rows], axis=1).tofile(d / f"{b}.bin")
        xs.append(x), ys.extend(y)
    s = checked(cifar.load_cifar10(str(d)), ["label"])  # the folder itself works too
    np.testing.assert_array_equal(s.features, np.concatenate(xs))
    np.testing.assert_array_equal(s.labels["label"], ys)


def write_cifar100_py(tmp_path):
    d, out = tmp_path / "cifar-100-python", {}
    d.mkdir()
    for split, n in (("train", 5), ("test", 2)):
        x, rows = cifar_images(n)
        fine, coarse = RNG.integers(0, 100, n), RNG.integers(0, 20, n)
        with open(d / split, "wb") as f:
            pickle.dump({b"data": rows, b"fine_labels": fine.tolist(), b"coarse_labels": coarse.tolist()}, f)
        out[split] = (x, fine, coarse)
    write(d / "meta", "")  # present in the official folder; not read
    return out


def test_cifar100_python_with_and_without_coarse(tmp_path):
    w = write_cifar100_py(tmp_path)
    s = checked(cifar.load_cifar100(str(tmp_path)), ["label", "coarse"])
    np.testing.assert_array_equal(s.labels["label"], np.concatenate([w["train"][1], w["test"][1]]))
    np.testing.assert_array_equal(s.labels["coarse"], np.concatenate([w["train"][2], w["test"][2]]))
    assert s.tasks[1].num_classes == 20 and s.tasks[0].num_classes == 100
    s = checked(cifar.load_cifar100(str(tmp_path), coarse=False), ["label"])
    assert len(s.tasks) == 1 and set(s.labels) == {"label"}


def test_cifar100_binary(tmp_path):
    d = tmp_path / "cifar-100-binary"
    d.mkdir()
    x, rows = cifar_images(4)
    coarse, fine = np.array([0, 19, 3, 4]), np.array([99, 0, 5, 6])
    for split in ("train", "test"):
        np.concatenate([coarse[:, None], fine[:, None], rows], axis=1).astype(np.uint8).tofile(d / f"{split}.bin")
    s = checked(cifar.load_cifar100(str(tmp_path)), ["label", "coarse"])
    np.testing.assert_array_equal(s.labels["label"], np.tile(fine, 2))
    np.testing.assert_array_equal(s.labels["coarse"], np.tile(coarse, 2))
    np.testing.assert_array_equal(s.features[:4], x)


# ----------------------------------------------------------------------------- SVHN

def test_svhn_mat(tmp_path):
    scipy_io = pytest.importorskip("scipy.io", reason="scipy is not installed: SVHN .mat files cannot be read")
    x = RNG.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)
    y = np.array([[10], [1], [9], [10], [3]], np.uint8)
    scipy_io.savemat(tmp_path / "train_32x32.mat", {"X": x, "y": y})
    scipy_io.savemat(tmp_path / "test_32x32.mat", {"X": x[..., :2], "y": y[:2]})
    s = checked(svhn.load_svhn(str(tmp_path)), ["label"])
    assert s.features.shape == (7, 32, 32, 3) and s.features.dtype == np.uint8
    np.testing.assert_array_equal(s.labels["label"], [0, 1, 9, 0, 3, 0, 1])
    np.testing.assert_array_equal(s.features[1], x[..., 1])
    assert list(s.official_split).count("test") == 2
    write(tmp_path / "train_32x32.mat", "not a mat file")
    expect_error(lambda: svhn.load_svhn(str(tmp_path)), "train_32x32.mat")


# ----------------------------------------------------------------------------- Multi-MNIST

def write_idx(path, arr, gz=True):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    Path(path).write_bytes(gzip.compress(data) if gz else data)


@pytest.fixture
def mnist_dir(tmp_path):
    for prefix, n, gz in (("train", 12, True), ("t10k", 5, False)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{'.gz' if gz else ''}",
                  RNG.integers(0, 256, (n, 28, 28)), gz)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{'.gz' if gz else ''}", np.arange(n) % 10, gz)
    return tmp_path


def test_multi_mnist_from_idx_is_deterministic(mnist_dir):
    s = checked(multi_mnist.load_multi_mnist(str(mnist_dir)), ["top_left", "bottom_right"])
    assert s.features.shape == (17, 28, 28, 1) and s.features.dtype == np.uint8 and s.image_shape == (28, 28, 1)
    np.testing.assert_array_equal(s.labels["top_left"], np.r_[np.arange(12) % 10, np.arange(5)])
    assert s.labels["bottom_right"].min() >= 0 and s.labels["bottom_right"].max() <= 9
    assert list(s.official_split).count("train") == 12
    again = multi_mnist.load_multi_mnist(str(mnist_dir))
    np.testing.assert_array_equal(again.features, s.features)
    other = multi_mnist.load_multi_mnist(str(mnist_dir), seed=1)
    assert not np.array_equal(other.features, s.features)


def test_multi_mnist_composition():
    x = np.zeros((2, 28, 28), np.uint8)
    x[0, :, :] = 200  # digit 0: a full square; digit 1: empty
    out, left, right = multi_mnist.combine(x, np.array([3, 4]), np.random.default_rng(0))
    assert out.shape == (2, 28, 28)
    # image 0 always holds its own square at the top left: its first canvas pixel maps to (0, 0)
    assert out[0, 0, 0] == 200 and left.tolist() == [3, 4]
    # image 1's top left is empty: whatever is drawn there comes from its bottom-right partner
    assert out[1, 0, 0] == 0


@pytest.mark.skipif(not (MNIST / "t10k-images-idx3-ubyte.gz").exists(), reason=f"real MNIST test set absent at {MNIST}")
def test_multi_mnist_real_mnist_test_set():
    s = multi_mnist.load_multi_mnist(str(SHARED))  # finds the mnist/ subfolder
    s.validate()
    with gzip.open(MNIST / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    assert s.features.shape == (10000, 28, 28, 1) and s.official_split is None  # no train files there
    np.testing.assert_array_equal(s.labels["top_left"], labels)
    assert set(np.unique(s.labels["bottom_right"])) == set(range(10))


# ----------------------------------------------------------------------------- CelebA

@pytest.fixture
def celeba_dir(tmp_path):
    names = [f"{i:06d}.jpg" for i in range(1, 5)]
    for n in names:
        write_image(tmp_path / "img_align_celeba" / n, 22, 18)
    values = RNG.choice([-1, 1], (4, 40))
    lines = ["4", " ".join(celeb_a.ATTRIBUTES)] + [f"{n} " + " ".join(f"{v:2d}" for v in row)
                                                   for n, row in zip(names, values)]
    write(tmp_path / "list_attr_celeba.txt", "\n".join(lines) + "\n")
    write(tmp_path / "list_eval_partition.txt", "\n".join(f"{n} {p}" for n, p in zip(names, [0, 0, 1, 2])) + "\n")
    return tmp_path, values


def test_celeb_a_raw(celeba_dir):
    root, values = celeba_dir
    s = checked(celeb_a.load_celeb_a(str(root), primary="Male"), ["Male"])
    assert len(s.tasks) == 40 and all(t.kind == "binary" for t in s.tasks)
    np.testing.assert_array_equal(s.labels["Male"], (values[:, celeb_a.ATTRIBUTES.index("Male")] > 0))
    assert s.labels["Smiling"].dtype == np.float32 and set(np.unique(s.labels["Smiling"])) <= {0.0, 1.0}
    assert list(s.official_split) == ["train", "train", "val", "test"]
    x = s.decode(tf.constant(s.features[0]))
    assert x.shape == (64, 64, 3) and x.dtype == tf.float32 and float(tf.reduce_max(x)) <= 1.0
    s = checked(celeb_a.load_celeb_a(str(root), auxiliary=["Young", "Male"], image_size=32), ["Smiling"])
    assert [t.name for t in s.tasks] == ["Smiling", "Young", "Male"] and s.image_shape == (32, 32, 3)


def test_celeb_a_bad_input(celeba_dir):
    root, _ = celeba_dir
    expect_error(lambda: celeb_a.load_celeb_a(str(root), primary="Happy"), "primary", "Happy")
    expect_error(lambda: celeb_a.load_celeb_a(str(root), auxiliary=["Smiling"]), "auxiliary")
    lines = (root / "list_attr_celeba.txt").read_text().splitlines()
    write(root / "list_attr_celeba.txt", "\n".join(lines[:-1] + [lines[-1][:30]]))
    expect_error(lambda: celeb_a.load_celeb_a(str(root)), "list_attr_celeba.txt")
    (root / "list_attr_celeba.txt").unlink()
    expect_error(lambda: celeb_a.load_celeb_a(str(root)), "list_attr_celeba.txt")


# ----------------------------------------------------------------------------- Oxford-IIIT Pet

@pytest.fixture
def pet_dir(tmp_path):
    rows = {"trainval.txt": [("Abyssinian_1", 1, 1), ("beagle_2", 13, 2), ("yorkshire_terrier_3", 37, 2)],
            "test.txt": [("Bombay_4", 8, 1)]}
    for fname, items in rows.items():
        body = "".join(f"{n} {c} {sp} {c}\n" for n, c, sp in items)
        write(tmp_path / "annotations" / fname, body)
        for n, _, _ in items:
            write_image(tmp_path / "images" / f"{n}.jpg", png=n.startswith("beagle"))  # a PNG named .jpg
    return tmp_path


def test_oxford_pet_raw(pet_dir):
    s = checked(oxford_pet.load_oxford_pet(str(pet_dir), image_size=32), ["breed", "species"])
    np.testing.assert_array_equal(s.labels["breed"], [0, 12, 36, 7])
    np.testing.assert_array_equal(s.labels["species"], [0, 1, 1, 0])
    assert s.labels["species"].dtype == np.float32 and s.tasks[0].num_classes == 37
    assert list(s.official_split) == ["train", "train", "train", "test"]
    for f in s.features:
        x = s.decode(tf.constant(f))
        assert x.shape == (32, 32, 3)
        assert s.augment(x, tf.constant([3, 4], tf.int64)).shape == (32, 32, 3)
    s = checked(oxford_pet.load_oxford_pet(str(pet_dir), species=False), ["breed"])
    assert len(s.tasks) == 1


def test_oxford_pet_bad_input(pet_dir):
    expect_error(lambda: oxford_pet.load_oxford_pet(str(pet_dir), species="yes"), "species")
    write(pet_dir / "annotations" / "test.txt", "Bombay_4 99 1 1\n")
    expect_error(lambda: oxford_pet.load_oxford_pet(str(pet_dir)), "test.txt")
    (pet_dir / "annotations" / "test.txt").unlink()
    expect_error(lambda: oxford_pet.load_oxford_pet(str(pet_dir)), "test.txt")


# ----------------------------------------------------------------------------- CUB

@pytest.fixture
def cub_dir(tmp_path):
    root = tmp_path / "CUB_200_2011"
    classes = ["001.Albatross", "002.Auklet", "003.Blackbird"]
    imgs = [(1, classes[0], "a_1.jpg", 1), (2, classes[1], "b_2.jpg", 0), (3, classes[2], "c_3.jpg", 1),
            (4, classes[0], "a_4.jpg", 0)]
    write(root / "classes.txt", "".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    write(root / "images.txt", "".join(f"{i} {c}/{n}\n" for i, c, n, _ in imgs))
    write(root / "image_class_labels.txt", "".join(f"{i} {classes.index(c) + 1}\n" for i, c, _, _ in imgs))
    write(root / "train_test_split.txt", "".join(f"{i} {t}\n" for i, _, _, t in imgs))
    present = RNG.integers(0, 2, (4, 312))
    lines = [f"{i} {a + 1} {present[i - 1, a]} 3 {RNG.random() * 20:.3f}" for i in range(1, 5) for a in range(312)]
    lines[7] += " 0"  # as in the official file, a few lines carry an extra field
    write(root / "attributes" / "image_attribute_labels.txt", "\n".join(lines) + "\n")
    for i, c, n, _ in imgs:
        write_image(root / "images" / c / n, 30, 24, png=(i == 2))
    return tmp_path, present


def test_cub_raw(cub_dir):
    root, present = cub_dir
    s = checked(cub.load_cub(str(root), image_size=32), ["species", "attr_001"])
    assert len(s.tasks) == 313 and s.tasks[-1].name == "attr_312" and s.tasks[0].num_classes == 3
    np.testing.assert_array_equal(s.labels["species"], [0, 1, 2, 0])
    assert s.labels["species"].dtype.kind == "i"
    got = np.stack([s.labels[f"attr_{a + 1:03d}"] for a in range(312)], axis=1)
    np.testing.assert_array_equal(got, present)
    assert got.dtype == np.float32
    assert list(s.official_split) == ["train", "test", "train", "test"]
    assert s.decode(tf.constant(s.features[1])).shape == (32, 32, 3)
    s = checked(cub.load_cub(str(root / "CUB_200_2011"), attributes=False), ["species"])
    assert len(s.tasks) == 1


def test_cub_bad_input(cub_dir):
    root, _ = cub_dir
    attr = root / "CUB_200_2011" / "attributes" / "image_attribute_labels.txt"
    text = attr.read_text()
    write(attr, text[:len(text) // 2])  # truncated mid-way
    expect_error(lambda: cub.load_cub(str(root)), "image_attribute_labels.txt")
    write(attr, text.replace("\n2 5 ", "\n2 5 x", 1))
    expect_error(lambda: cub.load_cub(str(root)), "image_attribute_labels.txt")
    (root / "CUB_200_2011" / "train_test_split.txt").unlink()
    expect_error(lambda: cub.load_cub(str(root)), "train_test_split.txt")
    expect_error(lambda: cub.load_cub(None), "--data_dir")


# ----------------------------------------------------------------------------- MovieLens

ML_RATINGS = [(1, 10, 5, 100), (1, 20, 3, 101), (2, 10, 1, 102), (3, 30, 4, 103), (2, 30, 3, 104)]


def check_ratings(s, ratings):
    r = np.array([x[2] for x in ratings], np.float32)
    assert s.features["user"].dtype == np.int32 and s.features["item"].dtype == np.int32
    assert s.features["user"].max() + 1 == len({x[0] for x in ratings})
    assert s.features["item"].max() + 1 == len({x[1] for x in ratings})
    np.testing.assert_array_equal(s.labels["rating"], r)
    np.testing.assert_array_equal(s.labels["click"], (r > 3).astype(np.float32))
    np.testing.assert_array_equal(s.time, [x[3] for x in ratings])
    assert s.tasks[0].kind == "regression" and s.tasks[1].kind == "binary" and s.official_split is None


def test_movielens_100k_raw(tmp_path):
    d = tmp_path / "ml-100k"
    write(d / "u.data", "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ML_RATINGS))
    write(d / "u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n3|23|M|writer|32067\n")
    flags = lambda *on: "|".join("1" if g in on else "0" for g in range(19))  # noqa: E731
    write(d / "u.item", f"10|Caf\xe9 (1995)|01-Jan-1995||http://x|{flags(0, 3)}\n20|B (1995)|||http://y|{flags()}\n"
                        f"30|C (1996)|01-Jan-1996||http://z|{flags(18)}\n", encoding="latin-1")
    s = checked(movielens.load_movielens_100k(str(tmp_path)), ["rating", "click"])
    check_ratings(s, ML_RATINGS)
    assert s.features["genres"].shape == (5, 19) and s.features["genres"].dtype == np.float32
    np.testing.assert_array_equal(s.features["genres"][0, [0, 3]], [1, 1])
    np.testing.assert_array_equal(s.features["age"], [24, 24, 53, 23, 53])
    np.testing.assert_array_equal(s.features["gender"], [1, 1, 0, 1, 0])
    np.testing.assert_array_equal(s.features["occupation"], [1, 1, 0, 2, 0])  # other, technician, writer
    s = checked(movielens.load_movielens_100k(str(d), drop_neutral=True), ["rating", "click"])
    assert len(s.labels["rating"]) == 3 and 3 not in s.labels["rating"]
    assert s.features["item"].max() == 1  # items re-indexed over the kept ratings
    expect_error(lambda: movielens.load_movielens_100k(str(d), drop_neutral="yes"), "drop_neutral")
    write(d / "u.data", "1\t10\t5\t100\n1\t20\tfive\t101\n")
    expect_error(lambda: movielens.load_movielens_100k(str(d)), "u.data", "line 2")
    write(d / "u.data", "1\t10\t5\n")
    expect_error(lambda: movielens.load_movielens_100k(str(d)), "u.data")
    write(d / "u.data", "9\t10\t5\t100\n")
    expect_error(lambda: movielens.load_movielens_100k(str(d)), "u.user")
    (d / "u.item").unlink()
    write(d / "u.data", "1\t10\t5\t100\n")
    expect_error(lambda: movielens.load_movielens_100k(str(d)), "u.item")


@pytest.mark.parametrize("rating", ["1e30", "-50", "0", "6", "nan"])
def test_ratings_outside_the_scale_name_file_and_line(tmp_path, rating):
    write(tmp_path / "u.data", f"1\t10\t5\t100\n1\t20\t{rating}\t101\n")
    expect_error(lambda: movielens.load_movielens_100k(str(tmp_path)), "u.data", "line 2", "scale 1..5")
    write(tmp_path / "ratings.csv", f"userId,movieId,rating,timestamp\n1,1,4.0,9\n1,3,{rating},9\n")
    expect_error(lambda: movielens.load_movielens_latest_small(str(tmp_path)), "ratings.csv", "line 3",
                 "scale 0.5..5")
    review = {"reviewerID": "A1", "asin": "B1", "overall": float(rating), "unixReviewTime": 1}
    write(tmp_path / "Toys.json", json.dumps({**review, "overall": 4.0}) + "\n\n" + json.dumps(review) + "\n")
    expect_error(lambda: amazon.load_amazon(str(tmp_path), category="Toys"), "Toys.json", "line 3", "scale 1..5")


def test_movielens_1m_raw(tmp_path):
    write(tmp_path / "ratings.dat", "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in ML_RATINGS), "latin-1")
    write(tmp_path / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n", "latin-1")
    write(tmp_path / "movies.dat", "10::Toy Story (1995)::Animation|Children's|Comedy\n20::Jumanji (1995)::Adventure\n"
                                   "30::Caf\xe9 (1995)::Western\n", "latin-1")
    s = checked(movielens.load_movielens_1m(str(tmp_path)), ["rating", "click"])
    check_ratings(s, ML_RATINGS)
    assert s.features["genres"].shape == (5, 18)
    assert s.features["genres"][0].sum() == 3 and s.features["genres"][3, movielens.GENRES_1M.index("Western")] == 1
    np.testing.assert_array_equal(s.features["age"], [0, 0, 6, 2, 6])
    np.testing.assert_array_equal(s.features["occupation"], [10, 10, 16, 15, 16])
    write(tmp_path / "movies.dat", "10::A (1995)::Animation|Cartoons\n20::B::Drama\n30::C::War\n")
    expect_error(lambda: movielens.load_movielens_1m(str(tmp_path)), "movies.dat", "Cartoons")
    write(tmp_path / "users.dat", "1::X::1::10::48067\n")
    expect_error(lambda: movielens.load_movielens_1m(str(tmp_path)), "users.dat")


def test_movielens_latest_small_raw(tmp_path):
    ratings = [(1, 1, 4.0, 964982703), (1, 3, 3.5, 964981247), (6, 3, 0.5, 964982224), (6, 47, 3.0, 964983815)]
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n" +
          "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in ratings))
    write(tmp_path / "movies.csv", 'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation|Children\n'
                                   '3,"American President, The (1995)",Comedy|IMAX\n47,Seven (1995),(no genres listed)\n')
    s = checked(movielens.load_movielens_latest_small(str(tmp_path)), ["rating", "click"])
    check_ratings(s, ratings)
    assert s.labels["click"].tolist() == [1, 1, 0, 0] and s.features["genres"].shape == (4, 19)
    assert s.features["genres"][3].sum() == 0 and s.features["genres"][1].sum() == 2
    s = movielens.load_movielens_latest_small(str(tmp_path), drop_neutral=True)
    assert s.labels["rating"].tolist() == [4.0, 3.5, 0.5]
    write(tmp_path / "ratings.csv", "user,movie\n1,2\n")
    expect_error(lambda: movielens.load_movielens_latest_small(str(tmp_path)), "ratings.csv")


@pytest.mark.skipif(not (ML100K / "u.data").exists(), reason=f"real MovieLens-100K absent at {ML100K}")
def test_movielens_100k_real():
    s = movielens.load_movielens_100k(str(ML100K))
    s.validate()
    rows = [line.split("\t") for line in (ML100K / "u.data").read_text().splitlines() if line]
    assert len(rows) == 100_000 and len(s.labels["rating"]) == 100_000
    assert len(np.unique(s.features["user"])) == 943 and s.features["user"].max() == 942
    assert len(np.unique(s.features["item"])) == 1682 and s.features["item"].max() == 1681
    assert s.labels["rating"].min() == 1 and s.labels["rating"].max() == 5
    clicks = sum(1 for r in rows if int(r[2]) > 3) / len(rows)
    assert s.labels["click"].mean() == pytest.approx(clicks, abs=1e-9)
    assert s.features["genres"].shape == (100_000, 19)
    assert s.time.dtype == np.int64 and s.time.min() > 8e8


# ----------------------------------------------------------------------------- Amazon

def test_amazon_json_lines(tmp_path):
    reviews = [{"reviewerID": "A1", "asin": "B1", "overall": 5.0, "unixReviewTime": 1400000000, "reviewText": "ok"},
               {"reviewerID": "A2", "asin": "B2", "overall": 3.0, "unixReviewTime": 1400000100},
               {"reviewerID": "A1", "asin": "B3", "overall": 1.0, "unixReviewTime": 1400000200}]
    with gzip.open(tmp_path / "reviews_Toys_5.json.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in reviews) + "\n")
    # 2014 metadata: python-literal lines, `categories` a list of paths
    write(tmp_path / "meta_Toys.json", "{'asin': 'B1', 'categories': [['Toys', 'Puzzles']]}\n"
                                       "{'asin': 'B2', 'categories': [['Toys', 'Dolls']]}\n")
    s = checked(amazon.load_amazon(str(tmp_path), category="Toys"), ["rating", "click"])
    np.testing.assert_array_equal(s.labels["rating"], [5, 3, 1])
    np.testing.assert_array_equal(s.labels["click"], [1, 0, 0])
    np.testing.assert_array_equal(s.features["user"], [0, 1, 0])
    np.testing.assert_array_equal(s.features["item"], [0, 1, 2])
    np.testing.assert_array_equal(s.features["category"], [2, 1, 0])  # Dolls=1, Puzzles=2, unknown=0
    np.testing.assert_array_equal(s.time, [1400000000, 1400000100, 1400000200])
    s = amazon.load_amazon(str(tmp_path), drop_neutral=True)  # the single reviews file is found
    assert s.labels["rating"].tolist() == [5, 1]
    # 2018 files: `{category}.json` and `category` a flat list
    write(tmp_path / "Games.json", json.dumps(reviews[0]) + "\n")
    write(tmp_path / "meta_Games.json", json.dumps({"asin": "B1", "category": ["Games", "Consoles"]}) + "\n")
    s = amazon.load_amazon(str(tmp_path), category="Games")
    assert s.features["category"].tolist() == [1]
    expect_error(lambda: amazon.load_amazon(str(tmp_path)), "category")  # two review files now
    expect_error(lambda: amazon.load_amazon(str(tmp_path), category="Books"), "Books", "reviews_Books_5.json")
    write(tmp_path / "Games.json", json.dumps(reviews[0]) + "\n{not json\n")
    expect_error(lambda: amazon.load_amazon(str(tmp_path), category="Games"), "Games.json", "line 2")
    write(tmp_path / "Games.json", json.dumps({"asin": "B1"}) + "\n")
    expect_error(lambda: amazon.load_amazon(str(tmp_path), category="Games"), "Games.json", "reviewerID")
    expect_error(lambda: amazon.load_amazon(None), "--data_dir")


# ----------------------------------------------------------------------------- TFDS (mocked)

TFDS_CASES = [  # loader, tasks, x shape after decode, examples per split, splits, mock examples
    (cifar.load_cifar10, ["label"], (32, 32, 3), 2, 8),
    (cifar.load_cifar100, ["label", "coarse"], (32, 32, 3), 2, 8),
    (svhn.load_svhn, ["label"], (32, 32, 3), 2, 8),
    (multi_mnist.load_multi_mnist, ["top_left", "bottom_right"], (28, 28, 1), 2, 8),
    (celeb_a.load_celeb_a, ["Smiling", "5_o_Clock_Shadow"], (64, 64, 3), 3, 4),
    # mock_data draws random head boxes with min > max for Pet examples 2+, which TFDS then refuses
    # to encode: only the first mocked example is valid.
    (oxford_pet.load_oxford_pet, ["breed", "species"], (224, 224, 3), 2, 1),
    (movielens.load_movielens_100k, ["rating", "click"], None, 1, 8),
    (movielens.load_movielens_1m, ["rating", "click"], None, 1, 8),
    (movielens.load_movielens_latest_small, ["rating", "click"], None, 1, 8),
]


@pytest.mark.parametrize("loader,tasks,shape,splits,n", TFDS_CASES, ids=lambda v: getattr(v, "__name__", None))
def test_tfds_sources(loader, tasks, shape, splits, n):
    with tfds.testing.mock_data(num_examples=n):
        s = checked(loader(None), tasks)
    assert s.num_examples == splits * n
    if shape is None:
        assert {"user", "item", "genres"} <= set(s.features) and s.time.shape == (n,)
        return
    assert s.is_image and s.image_shape == shape and len(set(s.official_split)) == splits
    x = s.features[0] if s.decode is None else s.decode(tf.constant(s.features[0]))
    assert tuple(x.shape) == shape


def test_tfds_missing_data_names_data_dir(tmp_path):
    msg = expect_error(lambda: cifar.load_cifar10(str(tmp_path)), "cifar-10-batches-py", "--data_dir")
    assert "cifar10" in msg
    expect_error(lambda: movielens.load_movielens_1m(str(tmp_path)), "ml-1m", "--data_dir")


# ----------------------------------------------------------------------------- bad input, registry

@pytest.mark.parametrize("loader", list(registry_extra.LOADERS.values()), ids=list(registry_extra.LOADERS))
def test_missing_directory(tmp_path, loader):
    missing = tmp_path / "no_such_dir"
    expect_error(lambda: loader(str(missing)), "no_such_dir")


def test_cifar_missing_truncated_garbled(cifar10_py):
    root, _, _ = cifar10_py
    d = root / "cifar-10-batches-py"
    (d / "data_batch_1").write_bytes(b"garbage, not a pickle")
    expect_error(lambda: cifar.load_cifar10(str(root)), "data_batch_1")
    with open(d / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    expect_error(lambda: cifar.load_cifar10(str(root)), "data_batch_1", "data")
    with open(d / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, f)
    expect_error(lambda: cifar.load_cifar10(str(root)), "label")
    (d / "data_batch_3").unlink()
    expect_error(lambda: cifar.load_cifar10(str(root)), "data_batch_3")
    b = root / "bin" / "cifar-10-batches-bin"
    b.mkdir(parents=True)
    for name in cifar.C10_BATCHES:
        np.zeros((2, 3073), np.uint8).tofile(b / f"{name}.bin")
    (b / "data_batch_2.bin").write_bytes(b"\0" * 5000)  # truncated
    expect_error(lambda: cifar.load_cifar10(str(root / "bin")), "data_batch_2.bin")
    expect_error(lambda: cifar.load_cifar100(str(root), coarse="yes"), "coarse")


def test_mnist_idx_truncated(mnist_dir):
    path = mnist_dir / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1000])
    expect_error(lambda: multi_mnist.load_multi_mnist(str(mnist_dir)), "t10k-images-idx3-ubyte")
    (mnist_dir / "train-labels-idx1-ubyte.gz").unlink()
    expect_error(lambda: multi_mnist.load_multi_mnist(str(mnist_dir)), "train-labels-idx1-ubyte")


def test_register_all():
    seen = {}
    registry_extra.register_all(lambda name, fn: seen.setdefault(name, fn))
    assert sorted(seen) == sorted(["multi_mnist", "cifar10", "cifar100", "svhn", "celeb_a", "oxford_iiit_pet", "cub",
                                   "movielens_100k", "movielens_1m", "movielens_latest_small", "amazon"])
    assert all(callable(fn) for fn in seen.values())
