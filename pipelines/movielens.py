"""MovieLens ratings: "rating" (regression, primary) and "click" = rating > 3 (binary, auxiliary).

Raw files (--data_dir, the folder itself or its parent `ml-100k/`, `ml-1m/`, `ml-latest-small/`):
100K `u.data` (tab), `u.user`, `u.item` (latin-1, `|`, 19 genre flags); 1M `ratings.dat`,
`users.dat`, `movies.dat` (latin-1, `::`); latest-small `ratings.csv`, `movies.csv` (`|`-joined
genres). Without raw files: TFDS `movielens/{100k,1m,latest-small}-ratings`.
Features: user, item (contiguous int32 indices over the kept ratings), genres (float32 multi-hot)
and, where known, gender (0 F, 1 M), age (years in 100K, bucket index 0..6 in 1M), occupation.
`time` holds the Unix timestamps; there is no official split.
"""

import csv
import os

import numpy as np
import tensorflow as tf

from pipelines import images
from pipelines.contract import Source
from pipelines.errors import DataError
from tfaux.tasks import Task

AGE_BUCKETS_1M = (1, 18, 25, 35, 45, 50, 56)
GENRES_1M = ("Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
             "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
             "Western")
GENRES_LATEST = ("Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
                 "Fantasy", "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western")
NO_GENRE = "(no genres listed)"


# ----------------------------------------------------------------------------- parsing helpers

def _rows(path, sep, ncols, encoding="utf-8", skip_header=False):
    """Lines of a `sep`-separated file split into exactly `ncols` fields."""
    lines = images.read_lines(path, encoding)[1 if skip_header else 0:]
    if not lines:
        raise DataError(f"File '{os.path.basename(path)}' holds no records.")
    rows = [ln.split(sep) for ln in lines]
    for i, r in enumerate(rows):
        if len(r) != ncols:
            raise images.bad_line(path, i + 1 + skip_header,
                                  f"expected {ncols} fields separated by {sep!r}, got {len(r)}")
    return rows


def _column(path, rows, col, dtype, offset=1):
    """Column `col` of `rows` as a numpy array of `dtype`, naming the bad line on failure."""
    try:
        return np.array([r[col] for r in rows]).astype(dtype)
    except ValueError:
        for i, r in enumerate(rows):
            try:
                np.array(r[col]).astype(dtype)
            except ValueError:
                raise images.bad_line(path, i + offset, f"field {col + 1} {r[col]!r} is not a number") from None
        raise


def check_scale(path, rating, low, high, lines=None):
    """Refuse a rating outside the dataset's scale [low, high] (or not a number), naming the
    first such line (`lines[i]`: the line of rating i; default i + 1)."""
    bad = np.flatnonzero(~((rating >= low) & (rating <= high)))
    if bad.size:
        i = int(bad[0])
        raise images.bad_line(path, lines[i] if lines is not None else i + 1,
                              f"rating {rating[i]:g} lies outside the dataset's scale {low:g}..{high:g}")
    return rating


def _lookup(table, keys, path, what):
    """table[k] for each key, or a DataError naming the file that lacks one."""
    missing = [k for k in np.unique(keys) if k not in table]
    if missing:
        raise DataError(f"File '{os.path.basename(path)}' has no {what} {missing[0]} "
                        f"({len(missing)} rated {what}s are missing).")
    return np.array([table[k] for k in keys])


def _multi_hot(genre_lists, vocab, path):
    index = {g: i for i, g in enumerate(vocab)}
    out = np.zeros((len(genre_lists), len(vocab)), np.float32)
    for r, names in enumerate(genre_lists):
        for g in names:
            if g == NO_GENRE or not g:
                continue
            if g not in index:
                raise DataError(f"File '{os.path.basename(path)}' names an unknown genre {g!r}.")
            out[r, index[g]] = 1.0
    return out


# ----------------------------------------------------------------------------- raw readers

def _raw_100k(root):
    path = images.require_file(root, "u.data")
    r = _rows(path, "\t", 4)
    user, item = _column(path, r, 0, np.int64), _column(path, r, 1, np.int64)
    rating, time = check_scale(path, _column(path, r, 2, np.float32), 1, 5), _column(path, r, 3, np.int64)
    upath = images.require_file(root, "u.user")
    u = _check_ints(upath, _rows(upath, "|", 5), (0, 1))
    occupations = sorted({row[3] for row in u})
    users = {int(row[0]): (int(row[1]), int(row[2] == "M"), occupations.index(row[3])) for row in u}
    ipath = images.require_file(root, "u.item")
    genres = {}
    for i, row in enumerate(_rows(ipath, "|", 24, encoding="latin-1"), start=1):
        if not row[0].isdigit() or any(f not in ("0", "1") for f in row[5:]):
            raise images.bad_line(ipath, i, "expected a movie id and 19 genre flags of 0 or 1")
        genres[int(row[0])] = np.array(row[5:], np.float32)
    u_feat = _lookup(users, user, upath, "user")
    feats = {"age": u_feat[:, 0].astype(np.int32), "gender": u_feat[:, 1].astype(np.int32),
             "occupation": u_feat[:, 2].astype(np.int32), "genres": _lookup(genres, item, ipath, "item")}
    return user, item, rating, time, feats


def _check_ints(path, rows, cols):
    for i, r in enumerate(rows, start=1):
        if not all(r[c].strip().isdigit() for c in cols):
            raise images.bad_line(path, i, f"fields {[c + 1 for c in cols]} must be integers")
    return rows


def _raw_1m(root):
    path = images.require_file(root, "ratings.dat")
    r = _rows(path, "::", 4, encoding="latin-1")
    user, item = _column(path, r, 0, np.int64), _column(path, r, 1, np.int64)
    rating, time = check_scale(path, _column(path, r, 2, np.float32), 1, 5), _column(path, r, 3, np.int64)
    upath = images.require_file(root, "users.dat")
    users = {}
    for i, row in enumerate(_check_ints(upath, _rows(upath, "::", 5, encoding="latin-1"), (0, 2, 3)), start=1):
        age, occ = int(row[2]), int(row[3])
        if row[1] not in ("F", "M") or age not in AGE_BUCKETS_1M or not 0 <= occ <= 20:
            raise images.bad_line(upath, i, "expected gender F|M, an age code of 1,18,25,35,45,50,56, occupation 0..20")
        users[int(row[0])] = (AGE_BUCKETS_1M.index(age), int(row[1] == "M"), occ)
    mpath = images.require_file(root, "movies.dat")
    m = _check_ints(mpath, _rows(mpath, "::", 3, encoding="latin-1"), (0,))
    hot = _multi_hot([row[2].split("|") for row in m], GENRES_1M, mpath)
    genres = {int(row[0]): hot[j] for j, row in enumerate(m)}
    u_feat = _lookup(users, user, upath, "user")
    feats = {"age": u_feat[:, 0].astype(np.int32), "gender": u_feat[:, 1].astype(np.int32),
             "occupation": u_feat[:, 2].astype(np.int32), "genres": _lookup(genres, item, mpath, "item")}
    return user, item, rating, time, feats


def _csv(path, header):
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"Cannot read '{os.path.basename(path)}' ({path}): {e}.") from e
    if not rows or [h.strip() for h in rows[0]] != header:
        raise DataError(f"File '{os.path.basename(path)}' must start with the header {','.join(header)}.")
    rows = [r for r in rows[1:] if r]
    for i, r in enumerate(rows, start=2):
        if len(r) != len(header):
            raise images.bad_line(path, i, f"expected {len(header)} comma-separated fields")
    if not rows:
        raise DataError(f"File '{os.path.basename(path)}' holds no records.")
    return rows


def _raw_latest(root):
    path = images.require_file(root, "ratings.csv")
    r = _csv(path, ["userId", "movieId", "rating", "timestamp"])
    user, item = _column(path, r, 0, np.int64, 2), _column(path, r, 1, np.int64, 2)
    rating, time = _column(path, r, 2, np.float32, 2), _column(path, r, 3, np.int64, 2)
    check_scale(path, rating, 0.5, 5, lines=np.arange(len(rating)) + 2)  # (line 1 is the header)
    mpath = images.require_file(root, "movies.csv")
    m = _check_ints(mpath, _csv(mpath, ["movieId", "title", "genres"]), (0,))
    hot = _multi_hot([row[2].split("|") for row in m], GENRES_LATEST, mpath)
    genres = {int(row[0]): hot[j] for j, row in enumerate(m)}
    return user, item, rating, time, {"genres": _lookup(genres, item, mpath, "item")}


# ----------------------------------------------------------------------------- TFDS

def _tfds(variant, data_dir, hint):
    def select(ex):
        out = {k: ex[k] for k in ("user_id", "movie_id", "user_rating", "timestamp")}
        out["genres"] = tf.minimum(tf.reduce_sum(tf.one_hot(ex["movie_genres"], 64), axis=0), 1.0)
        for k in ("user_gender", "bucketized_user_age", "raw_user_age", "user_occupation_label"):
            if k in ex:
                out[k] = ex[k]
        return out

    cols, _, info = images.tfds_source(f"movielens/{variant}-ratings", data_dir, splits=("train",),
                                       select=select, raw_hint=hint)
    feats = {"genres": cols["genres"][:, :info.features["movie_genres"].feature.num_classes]}
    if "user_gender" in cols:
        feats["gender"] = cols["user_gender"].astype(np.int32)
        feats["occupation"] = cols["user_occupation_label"].astype(np.int32)
        feats["age"] = (cols["raw_user_age"].astype(np.int32) if "raw_user_age" in cols else
                        np.searchsorted(AGE_BUCKETS_1M, cols["bucketized_user_age"]).astype(np.int32))
    return (cols["user_id"], cols["movie_id"], cols["user_rating"].astype(np.float32),
            cols["timestamp"].astype(np.int64), feats)


# ----------------------------------------------------------------------------- the Source

VARIANTS = {  # name: (folder, marker file, raw reader, hint)
    "100k": ("ml-100k", "u.data", _raw_100k, "the raw 'ml-100k/' folder (u.data, u.user, u.item)"),
    "1m": ("ml-1m", "ratings.dat", _raw_1m, "the raw 'ml-1m/' folder (ratings.dat, users.dat, movies.dat)"),
    "latest-small": ("ml-latest-small", "ratings.csv", _raw_latest,
                     "the raw 'ml-latest-small/' folder (ratings.csv, movies.csv)"),
}


def ratings_source(name, user, item, rating, time, feats, drop_neutral):
    """A rating/click Source from per-rating arrays (shared with pipelines.amazon)."""
    if not isinstance(drop_neutral, bool):
        raise DataError(f"{name} option 'drop_neutral' must be True or False, got {drop_neutral!r}.")
    keep = rating != 3 if drop_neutral else np.ones(len(rating), bool)
    if not keep.any():
        raise DataError(f"{name} has no ratings left after 'drop_neutral' removed the 3s.")
    (users, user_index), (items, item_index) = (np.unique(ids[keep], return_inverse=True) for ids in (user, item))
    features = {"user": user_index.astype(np.int32), "item": item_index.astype(np.int32),
                **{k: v[keep] for k, v in feats.items()}}
    rating = rating[keep].astype(np.float32)
    tasks = [Task("rating", role="primary", kind="regression"), Task("click", role="auxiliary", kind="binary")]
    return Source(name=name, tasks=tasks, features=features,
                  labels={"rating": rating, "click": (rating > 3).astype(np.float32)}, official_split=None,
                  decode=None, is_image=False, image_shape=None, augment=None, time=time[keep].astype(np.int64),
                  vocabularies={"user": users, "item": items})


def load_movielens(variant, data_dir=None, drop_neutral=False):
    """MovieLens `variant` ("100k", "1m", "latest-small"); `drop_neutral` drops ratings of exactly 3."""
    if variant not in VARIANTS:
        raise DataError(f"MovieLens variant must be one of {sorted(VARIANTS)}, got {variant!r}.")
    folder, marker, reader, hint = VARIANTS[variant]
    found = None
    if data_dir is not None:
        images.check_dir(data_dir, f"movielens_{variant}")
        root = images.find_root(data_dir, folder, marker)
        found = reader(root) if root is not None else None
    columns = found if found is not None else _tfds(variant, data_dir, hint)
    return ratings_source(f"movielens_{variant.replace('-', '_')}", *columns, drop_neutral)


def load_movielens_100k(data_dir=None, drop_neutral=False):
    """MovieLens 100K (943 users, 1,682 movies, 19 genre flags)."""
    return load_movielens("100k", data_dir, drop_neutral)


def load_movielens_1m(data_dir=None, drop_neutral=False):
    """MovieLens 1M (6,040 users, 3,706 rated movies, 18 genres)."""
    return load_movielens("1m", data_dir, drop_neutral)


def load_movielens_latest_small(data_dir=None, drop_neutral=False):
    """MovieLens latest-small (half-star ratings 0.5..5, 19 genres, no user features)."""
    return load_movielens("latest-small", data_dir, drop_neutral)
