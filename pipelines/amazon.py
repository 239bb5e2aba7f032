"""Amazon product reviews (McAuley et al.): "rating" (regression, primary), "click" = rating > 3 (binary).

Raw files only (--data_dir; there is no offline TFDS source): a JSON-lines reviews file with
`reviewerID`, `asin`, `overall`, `unixReviewTime` (optionally .gz), and optionally the metadata
JSON lines (`asin`, `categories` [2014, python-literal lines accepted] or `category` [2018]).
`category` picks the files: reviews `reviews_{category}_5.json`, `reviews_{category}.json`,
`{category}_5.json` or `{category}.json`, metadata `meta_{category}.json` (each optionally .gz);
with category None, --data_dir must hold exactly one reviews file (or be that file).
Features: user, item and, with metadata, category (index of the item's most specific category;
0 = unknown). `time` holds the review times.
"""

import ast
import gzip
import json
import os

import numpy as np

from pipelines import images
from pipelines.errors import DataError
from pipelines.movielens import check_scale, ratings_source

REVIEW_PATTERNS = ("reviews_{}_5.json", "reviews_{}.json", "{}_5.json", "{}.json")
FIELDS = ("reviewerID", "asin", "overall", "unixReviewTime")


def _json_lines(path):
    """Records of a JSON-lines file (also python-literal lines, as in the 2014 metadata)."""
    name = os.path.basename(path)
    try:
        with (gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")) as f:
            for i, ln in enumerate(f, start=1):
                if not ln.strip():
                    continue
                try:
                    rec = json.loads(ln)
                except json.JSONDecodeError:
                    try:
                        rec = ast.literal_eval(ln)
                    except (ValueError, SyntaxError):
                        raise images.bad_line(path, i, "not a JSON object") from None
                if not isinstance(rec, dict):
                    raise images.bad_line(path, i, "not a JSON object")
                yield i, rec
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"Cannot read '{name}' ({path}): {e}.") from e


def _with_gz(data_dir, name):
    for n in (name, name + ".gz"):
        if os.path.isfile(os.path.join(data_dir, n)):
            return os.path.join(data_dir, n)
    return None


def _find_files(data_dir, category):
    """(reviews path, metadata path or None)."""
    if os.path.isfile(data_dir):
        return data_dir, None
    images.check_dir(data_dir, "amazon")
    if category is None:
        found = sorted(n for n in os.listdir(data_dir) if ".json" in n and not n.startswith("meta_"))
        if len(found) != 1:
            raise DataError(f"amazon option 'category' is needed: --data_dir '{data_dir}' holds "
                            f"{len(found)} review files ({', '.join(found[:4]) or 'none'}), not exactly one.")
        reviews = os.path.join(data_dir, found[0])
        stem = found[0].split(".json")[0].removeprefix("reviews_").removesuffix("_5")
        return reviews, _with_gz(data_dir, f"meta_{stem}.json")
    if not isinstance(category, str) or not category or os.sep in category:
        raise DataError(f"amazon option 'category' must be a category name such as 'Electronics', got {category!r}.")
    for pattern in REVIEW_PATTERNS:
        reviews = _with_gz(data_dir, pattern.format(category))
        if reviews:
            return reviews, _with_gz(data_dir, f"meta_{category}.json")
    raise DataError(f"amazon option 'category' {category!r} matches no reviews file in '{data_dir}' "
                    f"(looked for {', '.join(p.format(category) for p in REVIEW_PATTERNS)}, optionally .gz).")


def _leaf_category(rec):
    cats = rec.get("categories", rec.get("category"))
    if isinstance(cats, list) and cats and isinstance(cats[0], list):
        cats = cats[0]
    return str(cats[-1]) if isinstance(cats, list) and cats else None


def load_amazon(data_dir=None, category=None, drop_neutral=False):
    """Amazon reviews of `category` (see the module docstring for the files)."""
    if data_dir is None:
        raise DataError("amazon has no offline TFDS source; pass --data_dir with the reviews JSON-lines file(s).")
    if not os.path.exists(data_dir):
        raise DataError(f"--data_dir '{data_dir}' for amazon does not exist.")
    reviews, meta = _find_files(data_dir, category)
    cols, lines = {f: [] for f in FIELDS}, []
    for i, rec in _json_lines(reviews):
        try:
            vals = [rec[f] for f in FIELDS]
            vals[2], vals[3] = float(vals[2]), int(vals[3])
        except KeyError as e:
            raise images.bad_line(reviews, i, f"field {e.args[0]!r} is missing") from None
        except (TypeError, ValueError):
            raise images.bad_line(reviews, i, "fields 'overall' and 'unixReviewTime' must be numbers") from None
        for f, v in zip(FIELDS, vals):
            cols[f].append(v)
        lines.append(i)
    if not cols["asin"]:
        raise DataError(f"File '{os.path.basename(reviews)}' holds no reviews.")
    user, item = np.array(cols["reviewerID"]), np.array(cols["asin"])
    rating = check_scale(reviews, np.array(cols["overall"], np.float32), 1, 5, lines)
    feats = {}
    if meta:
        leaf = {}
        for i, rec in _json_lines(meta):
            if "asin" not in rec:
                raise images.bad_line(meta, i, "field 'asin' is missing")
            leaf[rec["asin"]] = _leaf_category(rec)
        names = sorted({c for c in leaf.values() if c is not None})
        index = {c: j + 1 for j, c in enumerate(names)}
        feats["category"] = np.array([index.get(leaf.get(a), 0) for a in item], np.int32)
    return ratings_source("amazon", user, item, rating, np.array(cols["unixReviewTime"], np.int64), feats,
                          drop_neutral)
