"""`name=value,...` command-line arguments (--method_args, --dataset_args): values are Python
literals (numbers, True/False, quoted strings, tuples), anything else a plain string."""

import ast
import inspect


class KeywordArgsError(ValueError):
    """A malformed or unknown name=value argument; the message is one sentence."""


def split_items(text):
    """Split 'a=1,b=(2,3),c=x' on the commas that are outside brackets."""
    items, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    return [s.strip() for s in items + [current] if s.strip()]


def accepted(fn, skip=()):
    """Keyword parameters of `fn` (no *args / **kwargs, none of `skip`)."""
    params = inspect.signature(fn).parameters
    return [p for p, v in params.items()
            if p not in ("self", *skip) and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)]


def parse(text, allowed, flag, owner):
    """{name: value} of `text`, each name one of `allowed`; KeywordArgsError naming `flag` (e.g.
    "--method_args") and `owner` (e.g. "method 'gcs'") otherwise."""
    args = {}
    for item in split_items(text or ""):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise KeywordArgsError(f"{flag} must look like 'name=value,name=value', got '{text}'.")
        if key not in allowed:
            raise KeywordArgsError(f"{flag}: {owner} has no argument '{key}'; it accepts: "
                                   f"{', '.join(allowed) or 'none'}.")
        try:
            args[key] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            args[key] = value.strip()
    return args
