"""Helpers shared by the config files (configs are data: only ml_collections here)."""

from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """Parses a `--config=file.py:key=value,flag` string against typed defaults.

    A bare `flag` sets a boolean default to True; values are converted to the type of
    their default (booleans accept 1/0/true/false/yes/no). Unknown keys raise, naming
    the accepted ones, so a typo never silently trains the wrong recipe.
    """
    out = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        key = key.strip()
        if key not in defaults:
            raise ValueError(f"unknown config argument {key!r}; accepted: {sorted(defaults)}")
        default = defaults[key]
        if not sep:
            if not isinstance(default, bool):
                raise ValueError(f"config argument {key!r} needs a value ({key}=...)")
            out[key] = True
        elif isinstance(default, bool):
            low = value.strip().lower()
            if low not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(f"config argument {key}={value!r} is not a boolean")
            out[key] = low in ("1", "true", "yes")
        elif default is None:
            out[key] = value
        else:
            out[key] = type(default)(value)
    return ml_collections.ConfigDict(out)
