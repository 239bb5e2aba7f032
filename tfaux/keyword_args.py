"""`name=value,...` command-line arguments (--method_args, --dataset_args), typed by the
constructor's defaults: a boolean argument takes true/false/True/False/1/0, a number a number
(an integer argument a whole one), a string any text, a tuple a tuple of values; an argument
whose default is None takes a Python literal (numbers, quoted strings, tuples) or plain text, but
not true / false."""

import ast
import inspect

TRUE, FALSE = ("true", "True", "1"), ("false", "False", "0")


class KeywordArgsError(ValueError):
    """A malformed, unknown or mistyped name=value argument; the message is one sentence."""


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
    """{keyword parameter of `fn`: its default} (no *args / **kwargs, none of `skip`); a Keras
    Layer's own constructor (a method without arguments of its own) gives none."""
    if getattr(fn, "__module__", "").startswith("keras"):
        return {}
    params = inspect.signature(fn).parameters
    return {p: (None if v.default is v.empty else v.default) for p, v in params.items()
            if p not in ("self", *skip) and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)}


def _literal(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def typed(key, text, default, where):
    """The value of `key=text`, of the type of `default`; KeywordArgsError naming `where` otherwise."""
    if isinstance(default, bool):
        if text in TRUE or text in FALSE:
            return text in TRUE
        raise KeywordArgsError(f"{where}: argument '{key}' is true or false, got '{text}'.")
    value = _literal(text)
    if isinstance(default, (int, float)):
        whole = isinstance(default, int)
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
            kind = "a whole number" if whole else "a number"
            raise KeywordArgsError(f"{where}: argument '{key}' is {kind}, got '{text}'.")
        return float(value) if not whole else value
    if isinstance(default, str):
        return value if isinstance(value, str) else text
    if isinstance(default, (tuple, list)) and not isinstance(value, (tuple, list)):
        raise KeywordArgsError(f"{where}: argument '{key}' is a tuple such as (1, 2), got '{text}'.")
    if isinstance(value, bool):
        raise KeywordArgsError(f"{where}: argument '{key}' is not true or false, got '{text}'.")
    return value


def parse(text, allowed, flag, owner):
    """{name: value} of `text`, each name a key of `allowed` ({name: default}) and each value of its
    default's type (`typed`); KeywordArgsError naming `flag` (e.g. "--method_args") and `owner`
    (e.g. "method 'gcs'") otherwise."""
    args = {}
    for item in split_items(text or ""):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise KeywordArgsError(f"{flag} must look like 'name=value,name=value', got '{text}'.")
        if key not in allowed:
            raise KeywordArgsError(f"{flag}: {owner} has no argument '{key}'; it accepts: "
                                   f"{', '.join(allowed) or 'none'}.")
        args[key] = typed(key, value.strip(), allowed[key], f"{flag} of {owner}")
    return args
