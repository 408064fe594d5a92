"""Where each setting's value comes from: options, the environment, ``.env``, the agent file.

Each source is read into a :class:`Layer` of values keyed by their path (``("port",)``,
``("openai_chat", "model")``), so a table is merged key by key; the layers are then
merged lowest first. Every value keeps its :class:`Origin`, so an error can name the
variable it came from, or the file, line, table and key.

The settings class is passed in (:meth:`ServerSettings.from_env
<adapters.app.settings.ServerSettings.from_env>` passes itself) rather than imported:
this module reads only its fields, and stays below it.
"""

from __future__ import annotations

import functools
import json
import re
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
from dotenv import dotenv_values
from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings, EnvSettingsSource
from pydantic_settings import SettingsError as _SourceError

#: Where a value came from, highest precedence first (what ``voice-agent config`` prints).
SOURCES = ("option", "env", ".env", "file", "default")

#: A setting's place: ``("port",)``, or a table's key as ``("openai_chat", "model")``.
SettingPath = tuple[str, ...]


class SettingsError(ValueError):
    """A setting that cannot work; the message names the variable, or the file and line."""


# -- what the sources need to know of the settings class -------------------------------------


def _is_table(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


@functools.cache
def table_names(cls: type[BaseSettings]) -> frozenset[str]:
    """The settings that are tables (``[openai_chat]``): merged key by key."""
    return frozenset(n for n, f in cls.model_fields.items() if _is_table(f.annotation))


@functools.cache
def secret_names(cls: type[BaseSettings]) -> frozenset[str]:
    """The keys: never printed, logged or put in an error."""
    return frozenset(n for n, f in cls.model_fields.items() if _is_secret(f.annotation))


def table_fields(cls: type[BaseSettings], table: str) -> dict[str, Any]:
    """The fields of the table ``table``."""
    return cls.model_fields[table].annotation.model_fields  # type: ignore[union-attr]


def _annotation(cls: type[BaseSettings], path: SettingPath) -> Any:
    """The type of the setting at ``path``, or None when there is none."""
    field = cls.model_fields.get(path[0])
    if field is None or len(path) > 2:
        return None
    if len(path) == 1:
        return field.annotation
    table = table_fields(cls, path[0]) if path[0] in table_names(cls) else {}
    return table[path[1]].annotation if path[1] in table else None


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(annotation) is tuple


# -- layers and origins ----------------------------------------------------------------------


@attrs.frozen
class Origin:
    kind: str  # one of SOURCES
    name: str  # as the user wrote it: PORT, OPENAI_CHAT__MODEL, [agent] idle_timeout
    place: str | None = None  # "agent.toml line 12", ".env line 3"

    def where(self) -> str:
        return f"{self.place}: {self.name}" if self.place else self.name


@attrs.frozen
class Layer:
    kind: str
    values: dict[SettingPath, Any]
    names: dict[SettingPath, str]
    text: str | None = None  # the file's text, to find a value's line
    path: Path | None = None

    def origin(self, path: SettingPath) -> Origin:
        name = self.names.get(path) or ".".join(path)
        if self.kind == "file":
            line = _toml_line(self.text or "", path)
            table = isinstance(self.values.get(path), dict)
            name = f"[{path[0]}]" if table and len(path) == 1 else _toml_name(path)
            return Origin("file", name, _at(self.path, line))
        if self.kind == ".env":
            line = _dotenv_line(self.text or "", name)
            return Origin(".env", name, _at(self.path, line))
        return Origin(self.kind, name)


@attrs.frozen
class Sources:
    """Every value given, with where it came from, and the ``.env`` file read."""

    values: dict[SettingPath, Any]
    origins: dict[SettingPath, Origin]
    env_file: Path | None


def read_sources(
    cls: type[BaseSettings],
    options: Mapping[str, Any],
    outside: Mapping[str, str],
    default_env_file: str | None,
) -> Sources:
    """``options``, the environment ``outside``, its ``.env`` and its agent file, merged.

    ``default_env_file`` is read when ``outside`` does not name one in ``ENV_FILE``.
    """
    layers = [Layer("option", leaves(cls, options), {})]
    layers.append(_environment_layer(cls, outside))
    env_file = outside.get("ENV_FILE") or default_env_file
    if env_file:
        layers.append(_dotenv_layer(cls, Path(env_file), required="ENV_FILE" in outside))
    read = next((layer.path for layer in layers if layer.kind == ".env" and layer.path), None)
    agent_file = next(
        (layer.values[("agent_file",)] for layer in layers if ("agent_file",) in layer.values),
        None,
    )
    if agent_file:
        layers.append(_file_layer(cls, Path(agent_file)))

    values: dict[SettingPath, Any] = {}
    origins: dict[SettingPath, Origin] = {}
    for layer in reversed(layers):  # lowest first, so higher ones overwrite
        for path, value in layer.values.items():
            values[path] = value
            origins[path] = layer.origin(path)
    return Sources(values, origins, read)


def _at(path: Path | None, line: int | None) -> str:
    return f"{path} line {line}" if line else str(path)


def leaves(cls: type[BaseSettings], data: Mapping[str, Any]) -> dict[SettingPath, Any]:
    """``{"openai_chat": {"model": m}}`` as ``{("openai_chat", "model"): m}``; a table's keys
    are merged one by one, everything else is one value."""
    tables = table_names(cls)
    found: dict[SettingPath, Any] = {}
    for key, value in data.items():
        if key in tables and isinstance(value, Mapping):
            found.update({(key, k): v for k, v in value.items()})
        else:
            found[(key,)] = value
    return found


def nest(values: Mapping[SettingPath, Any]) -> dict[str, Any]:
    """The values by path back into the settings' shape: a table's keys into its dict."""
    data: dict[str, Any] = {}
    for path, value in values.items():
        if len(path) == 2:
            data.setdefault(path[0], {})[path[1]] = value
        else:
            data[path[0]] = value
    return data


# -- the environment and .env ----------------------------------------------------------------


class _MappingSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (the environment or ``.env``).

    A table is read only key by key (``ESPEAK__VOICE``), never whole from a variable named
    like it (``AGENT``), which could be anyone's.
    """

    def __init__(self, cls: type[BaseSettings], mapping: Mapping[str, str | None]) -> None:
        super().__init__(cls)
        tables = table_names(cls)
        self.env_vars = {
            k.lower(): v
            for k, v in mapping.items()
            if v not in (None, "") and k.lower() not in tables
        }


def _environment_layer(
    cls: type[BaseSettings], mapping: Mapping[str, str | None], kind: str = "env"
) -> Layer:
    try:
        values = leaves(cls, _MappingSource(cls, mapping)())
    except _SourceError:
        raise SettingsError(_json_problem(cls, mapping)) from None
    return Layer(kind, values, {path: _variable(path, mapping) for path in values})


def _variable(path: SettingPath, mapping: Mapping[str, Any]) -> str:
    """The variable that set ``path``, spelt as it was."""
    wanted = "__".join(path).lower()
    return next((k for k in mapping if k.lower() == wanted), wanted.upper())


def _json_problem(cls: type[BaseSettings], mapping: Mapping[str, str | None]) -> str:
    """Which variable holding a list is not JSON (pydantic-settings names only the field)."""
    for name, value in mapping.items():
        if _is_list(_annotation(cls, tuple(name.lower().split("__")))):
            try:
                json.loads(value or "null")
            except ValueError:
                return f'{name}={value!r}: not JSON (a list is written as ["a", "b"])'
    return "a list setting in the environment is not JSON"


def _dotenv_layer(cls: type[BaseSettings], path: Path, *, required: bool) -> Layer:
    if not path.exists():
        if required:
            raise SettingsError(f"ENV_FILE={str(path)!r}: no such file")
        return Layer(".env", {}, {})
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: cannot read it: {exc}") from None
    env = _environment_layer(cls, dotenv_values(path), ".env")
    return attrs.evolve(env, text=text, path=path)


def _dotenv_line(text: str, name: str) -> int | None:
    pattern = re.compile(rf"\s*(export\s+)?{re.escape(name)}\s*=", re.IGNORECASE)
    for number, line in enumerate(text.splitlines(), 1):
        if pattern.match(line):
            return number
    return None


# -- the agent file --------------------------------------------------------------------------


def _file_layer(cls: type[BaseSettings], path: Path) -> Layer:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"AGENT_FILE={str(path)!r}: cannot read it: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message ends "(at line L, column C)"
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    # Settings that make no sense inside the agent file: the keys, and the file's own name.
    not_in_file = secret_names(cls) | {"agent_file"}
    for key in data:
        if key in not_in_file:
            line = _toml_line(text, (key,))
            where = "AGENT_FILE names the file" if key == "agent_file" else "keys"
            raise SettingsError(
                f"{_at(path, line)}: {key}: not allowed in the agent file ({where} belong in "
                "the environment or .env)"
            )
    return Layer("file", leaves(cls, data), {}, text, path)


def _toml_name(path: SettingPath) -> str:
    return f"[{path[0]}] {path[1]}" if len(path) == 2 else path[0]


def _toml_line(text: str, path: SettingPath) -> int | None:
    """The line of a key (or, for a whole table, its header); None when it cannot be told."""
    table, key = (path[0], path[1]) if len(path) == 2 else (None, path[0])
    current: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        header = re.fullmatch(r"\[\s*([\w.-]+)\s*\](\s*#.*)?", stripped)
        if header:
            current = header.group(1)
            if table is None and current == key:
                return number
            continue
        if current == table and re.match(rf"[\"']?{re.escape(key)}[\"']?\s*=", stripped):
            return number
    return None
