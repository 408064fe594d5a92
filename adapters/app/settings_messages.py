"""The settings in words: what is wrong with a value and where it came from; every setting shown.

A bad value is named as the user wrote it (the variable, or the file, line, table
and key), with a phrase instead of pydantic's wording. Keys are shown only as
set or not and their length, never any part of them: in errors and in
``voice-agent config`` alike.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings

from adapters.app.settings_sources import (
    SOURCES,
    Origin,
    SettingPath,
    secret_names,
    table_fields,
    table_names,
)

if TYPE_CHECKING:  # for the annotations only: the settings module imports this one
    from adapters.app.settings import ServerSettings


def masked(secret: SecretStr | str | None) -> str:
    """Whether a key is set and its length: never any part of it."""
    if secret is None:
        return "not set"
    text = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    return f"set ({len(text)} characters)"


# -- what went wrong, in words -----------------------------------------------------------------

_PHRASES = {
    "int_parsing": "not an integer",
    "int_type": "not an integer",
    "int_from_float": "not an integer",
    "float_parsing": "not a number",
    "float_type": "not a number",
    "bool_parsing": "not true or false",
    "bool_type": "not true or false",
    "string_type": "not text",
    "tuple_type": "not a list",
    "list_type": "not a list",
    "model_type": "not a table",
    "dict_type": "not a table",
    "path_type": "not a path",
}


def problems(
    cls: type[BaseSettings], error: ValidationError, origins: Mapping[SettingPath, Origin]
) -> str:
    """One line per bad value, each naming where it came from."""
    lines = [_problem(cls, problem, origins) for problem in error.errors()]
    return "\n".join(dict.fromkeys(lines))


def _problem(
    cls: type[BaseSettings], error: Mapping[str, Any], origins: Mapping[SettingPath, Origin]
) -> str:
    loc = tuple(str(part) for part in error["loc"])
    path = next((loc[:n] for n in range(len(loc), 0, -1) if loc[:n] in origins), loc[:2])
    origin = origins.get(path) or Origin("default", ".".join(path))
    secret = path[0] in secret_names(cls)
    shown = masked(str(error["input"])) if secret else _short(error["input"])
    if error["type"] == "extra_forbidden":
        return f"{origin.where()}: not a setting{_suggestion(cls, path)}"
    return f"{origin.where()}={shown}: {_phrase(error)}"


def _phrase(error: Mapping[str, Any]) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _PHRASES:
        return _PHRASES[kind]
    if kind == "literal_error":
        return f"choose {ctx['expected']}"
    if kind in ("greater_than_equal", "greater_than"):
        return f"must be at least {ctx.get('ge', ctx.get('gt'))}"
    if kind in ("less_than_equal", "less_than"):
        return f"must be at most {ctx.get('le', ctx.get('lt'))}"
    message = str(error["msg"])
    return message[0].lower() + message[1:]


def _suggestion(cls: type[BaseSettings], path: SettingPath) -> str:
    if len(path) == 2 and path[0] in table_names(cls):
        known = list(table_fields(cls, path[0]))
    else:
        known = list(cls.model_fields)
    close = difflib.get_close_matches(path[-1].lower(), known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- voice-agent config ------------------------------------------------------------------------


def effective(settings: ServerSettings) -> list[tuple[str, str, str]]:
    """Each setting as (name, source, value shown), keys masked; what ``voice-agent config`` prints."""
    cls = type(settings)
    tables = table_names(cls)
    rows = []
    for name in cls.model_fields:
        value = getattr(settings, name)
        if name in tables:
            for key in type(value).model_fields:
                rows.append(
                    (f"[{name}] {key}", settings.source(name, key), _show(getattr(value, key)))
                )
        else:
            rows.append((name.upper(), settings.source(name), _show(value)))
    return rows


def print_effective(settings: ServerSettings) -> None:
    """``voice-agent config``: every effective setting, where it came from, keys masked."""
    rows = effective(settings)
    width = max(len(name) for name, _, _ in rows)
    print(f"# sources, highest first: {', '.join(SOURCES)}")
    print(f"# .env: {settings.env_file or 'none read'}")
    print(f"# agent file: {settings.agent_file or 'none'}")
    for name, source, value in rows:
        print(f"{name:<{width}}  {source:<7}  {value}")


def _show(value: Any) -> str:
    if isinstance(value, SecretStr) or value is None:
        return masked(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return repr(list(value))
    return repr(value)
