"""Every setting of the server, its keys and its providers, in one validated object.

Before this there were three ways in: the server's own environment reads, each
provider reading its key from the environment when its settings were made, and the
agent file's tables splatted into provider classes. A typo or a bad number then
surfaced as a traceback far from its cause, or not at all. Here every value comes
through one place, with pydantic's validation, and one order of precedence
(highest first):

1. options given in code or on the command line (``voice-agent serve --port``);
2. the environment (``PORT=8000``; a table's key as ``OPENAI_CHAT__MODEL=...``);
3. the ``.env`` file: ``ENV_FILE`` when set, else ``./.env``;
4. the agent file, ``AGENT_FILE`` (TOML: ``[agent]``, the provider tables, and any
   other setting but the keys, which stay out of a file that gets shared);
5. the defaults below, which run a local, offline agent.

A value that cannot work is a :class:`SettingsError` naming where it came from:
the variable, the ``.env`` line, or the agent file's line, table and key. Keys are
``SecretStr``: their text is never printed, logged or put in an error, only
whether they are set and their length (``voice-agent config``).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic import create_model as _create_model
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict
from pydantic_settings import SettingsError as _SourceError

from adapters.vobiz.rest import DEFAULT_BASE_URL as VOBIZ_API_URL
from engine.config import AgentConfig

#: Where a value came from, highest precedence first (what ``voice-agent config`` prints).
SOURCES = ("option", "env", ".env", "file", "default")


class SettingsError(ValueError):
    """A setting that cannot work; the message names the variable, or the file and line."""


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OpenAIChatOptions(_Table):
    """``[openai_chat]``: the model behind the agent (``adapters/providers/openai_chat.py``)."""

    model: str = "gpt-4o-mini"
    temperature: float | None = None
    max_completion_tokens: int | None = 300
    max_retries: Literal[0, 1] = 1
    #: A module with ``TOOLS = [tool(fn, ...)]`` (``adapters/providers/tools.py``).
    tools_module: str | None = None
    max_tool_rounds: int = 3


class OpenAISpeechOptions(_Table):
    """``[openai_speech]``: OpenAI's streamed voice (``adapters/providers/openai_speech.py``)."""

    model: str = "gpt-4o-mini-tts"
    voice: str = "marin"
    instructions: str | None = None
    speed: float | None = None
    max_retries: Literal[0, 1] = 1


class DeepgramSpeechOptions(_Table):
    """``[deepgram_speech]``: Deepgram Aura's voice (``adapters/providers/deepgram_tts.py``)."""

    model: str = "aura-2-thalia-en"
    connect_timeout: float = 5.0
    reply_timeout: float = 5.0
    clear_timeout: float = 0.5


class DeepgramListenOptions(_Table):
    """``[deepgram_listen]``: Deepgram's recognizer (``adapters/providers/deepgram_stt.py``)."""

    model: str = "nova-3"
    language: str = "en"
    interim_results: bool = True
    endpointing: int = 300
    utterance_end_ms: int = 1000
    vad_events: bool = True
    smart_format: bool = True
    keyterms: tuple[str, ...] = ()
    keepalive_after: float = 3.0
    backlog_seconds: float = 30.0
    backoff: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
    connect_timeout: float = 5.0
    close_timeout: float = 3.0


class DeepgramFluxOptions(_Table):
    """``[deepgram_flux]``: Deepgram Flux, the recognizer that ends turns (``deepgram_flux.py``)."""

    model: str = "flux-general-en"
    eot_threshold: float | None = None
    eager_eot_threshold: float | None = 0.5
    eot_timeout_ms: int | None = None
    keyterms: tuple[str, ...] = ()
    chunk_ms: int = 80
    keepalive_after: float = 5.0
    backlog_seconds: float = 30.0
    replay_margin: float = 1.0
    backoff: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
    connect_timeout: float = 5.0
    close_timeout: float = 3.0


class EspeakOptions(_Table):
    """``[espeak]``: the offline voice (``adapters/offline/espeak.py``)."""

    voice: str = "en-us"
    rate_wpm: int = 165
    pitch: int = 50


def _agent_options() -> type[_Table]:
    """``[agent]``, field for field the engine's :class:`AgentConfig`.

    Made from the engine's class rather than copied, so the engine stays the one
    definition of its settings (they are also written into every call log).
    """
    types = typing.get_type_hints(AgentConfig)
    fields: dict[str, Any] = {}
    for field in attrs.fields(AgentConfig):
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            factory = default.factory  # type: ignore[union-attr]
            fields[field.name] = (types[field.name], Field(default_factory=factory))
        else:
            fields[field.name] = (types[field.name], default)
    return _create_model(
        "AgentOptions", __base__=_Table, __doc__="``[agent]``: engine/config.py", **fields
    )


AgentOptions = _agent_options()


class ServerSettings(BaseSettings):
    """The whole configuration; build it with :meth:`from_env`.

    ``ServerSettings(**values)`` alone applies only the defaults and ``values``: nothing
    is read from outside, which is what tests want.
    """

    model_config = SettingsConfigDict(
        extra="forbid", frozen=True, env_nested_delimiter="__", env_ignore_empty=True
    )

    # Where Vobiz reaches this server; the media socket is wss for an https URL.
    public_url: str = ""  # default: http://127.0.0.1:{port}
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    #: Signs the per-call media-socket tokens; random per process when unset.
    stream_secret: SecretStr | None = None

    # The Vobiz account: REST hang-up and transfer, outbound calls, webhook signatures.
    vobiz_auth_id: str | None = None
    vobiz_auth_token: SecretStr | None = None
    vobiz_api_url: str = VOBIZ_API_URL
    #: A sub-account's callbacks also carry ``X-Vobiz-Signature-MA-*``, signed with this token.
    vobiz_parent_auth_token: SecretStr | None = None
    #: Default: on when ``VOBIZ_AUTH_TOKEN`` is set.
    validate_signatures: bool = False

    call_log_dir: Path = Path("calls")
    record_audio: bool = False
    #: Calls held at once (answered and waiting for their stream, or live).
    max_calls: int = Field(50, ge=0)
    #: The media stream's format (the answer's ``contentType``); checked when the app is made.
    media_format: str = "audio/x-mulaw;rate=8000"
    #: Vobiz ``maxRetries``: reconnects of a dropped media stream; the call waits for them.
    stream_retries: int = Field(0, ge=0, le=10)
    drain_timeout: float = Field(30.0, ge=0)
    agent_file: Path | None = None

    # Which providers answer: auto picks the real one when its key is set.
    stt_provider: Literal["auto", "offline", "deepgram", "deepgram-flux"] = "auto"
    llm_provider: Literal["auto", "scripted", "openai"] = "auto"
    tts_provider: Literal["auto", "offline", "openai", "deepgram"] = "auto"
    local_vad: Literal["webrtc", "silero"] = "webrtc"
    #: What notices the caller talking over the agent when Deepgram listens.
    barge_in_source: Literal["vad", "stt", "both"] = "both"
    deepgram_api_key: SecretStr | None = None
    deepgram_url: str = "wss://api.deepgram.com"
    openai_api_key: SecretStr | None = None
    openai_base_url: str = "https://api.openai.com/v1"

    # The agent file's tables.
    agent: AgentOptions = AgentOptions()  # type: ignore[valid-type]
    openai_chat: OpenAIChatOptions = OpenAIChatOptions()
    openai_speech: OpenAISpeechOptions = OpenAISpeechOptions()
    deepgram_speech: DeepgramSpeechOptions = DeepgramSpeechOptions()
    deepgram_listen: DeepgramListenOptions = DeepgramListenOptions()
    deepgram_flux: DeepgramFluxOptions = DeepgramFluxOptions()
    espeak: EspeakOptions = EspeakOptions()
    #: The offline scripted brain's script (``adapters/offline/scripted.py``); built-in when unset.
    script: Path | None = None
    #: Words the offline recognizer should expect (the scripted brain brings its own).
    hints: tuple[str, ...] = ()

    _origins: dict[tuple[str, ...], _Origin] = PrivateAttr(default_factory=dict)
    _env_file: Path | None = PrivateAttr(default=None)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, *_sources, **_named):
        """Only the values given: :meth:`from_env` layers the outside sources itself, to know
        where each value came from."""
        return (init_settings,)

    @model_validator(mode="before")
    @classmethod
    def _derived_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if not data.get("public_url"):
                data["public_url"] = f"http://127.0.0.1:{data.get('port', 8000)}"
            data["public_url"] = str(data["public_url"]).rstrip("/")
            if data.get("validate_signatures") is None:
                data["validate_signatures"] = bool(data.get("vobiz_auth_token"))
        return data

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **options: Any) -> ServerSettings:
        """The settings from ``options``, ``env``, ``.env`` and the agent file, in that order.

        ``env`` defaults to this process's environment, and then ``./.env`` is read if it
        exists. A mapping passed as ``env`` is the whole environment (tests pass ``{}``): no
        ``.env`` is read unless it sets ``ENV_FILE``.
        """
        outside = os.environ if env is None else env
        layers = [_Layer("option", _leaves(options), {})]
        layers.append(_environment_layer(outside))
        env_file = outside.get("ENV_FILE") or (".env" if env is None else None)
        if env_file:
            layers.append(_dotenv_layer(Path(env_file), required="ENV_FILE" in outside))
        read = next((layer.path for layer in layers if layer.kind == ".env" and layer.path), None)
        agent_file = next(
            (layer.values[("agent_file",)] for layer in layers if ("agent_file",) in layer.values),
            None,
        )
        if agent_file:
            layers.append(_file_layer(Path(agent_file)))

        values: dict[tuple[str, ...], Any] = {}
        origins: dict[tuple[str, ...], _Origin] = {}
        for layer in reversed(layers):  # lowest first, so higher ones overwrite
            for path, value in layer.values.items():
                values[path] = value
                origins[path] = layer.origin(path)
        try:
            settings = cls.model_validate(_nest(values))
        except ValidationError as exc:
            problems = [_problem(error, origins) for error in exc.errors()]
            raise SettingsError("\n".join(dict.fromkeys(problems))) from None
        settings._origins = origins
        settings._env_file = read
        return settings

    @property
    def env_file(self) -> Path | None:
        """The ``.env`` file that was read, if any."""
        return self._env_file

    def source(self, *path: str) -> str:
        """Where a setting's value came from: one of :data:`SOURCES`."""
        origin = self._origins.get(path)
        return origin.kind if origin is not None else "default"

    def with_values(self, **changes: Any) -> ServerSettings:
        """A copy with ``changes`` (validated), which then count as options."""
        data = self.model_dump()
        data.update(changes)
        new = type(self).model_validate(data)
        new._origins = self._origins | {(k,): _Origin("option", k) for k in changes}
        new._env_file = self._env_file
        return new

    @property
    def ws_base(self) -> str:
        """The media WebSocket base URL: wss for an https public URL."""
        if self.public_url.startswith("https://"):
            return "wss://" + self.public_url.removeprefix("https://")
        return "ws://" + self.public_url.removeprefix("http://")

    def agent_config(self) -> AgentConfig:
        """The engine's settings, from ``[agent]``."""
        return AgentConfig(**self.agent.model_dump())  # type: ignore[attr-defined]


def reveal(secret: SecretStr | None) -> str | None:
    """A key's text, for the code that hands it to its service; never for a log or a message."""
    return secret.get_secret_value() if secret is not None else None


def masked(secret: SecretStr | str | None) -> str:
    """Whether a key is set and its length: never any part of it."""
    if secret is None:
        return "not set"
    text = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    return f"set ({len(text)} characters)"


def effective(settings: ServerSettings) -> list[tuple[str, str, str]]:
    """Each setting as (name, source, value shown), keys masked; what ``voice-agent config`` prints."""
    rows = []
    for name in ServerSettings.model_fields:
        value = getattr(settings, name)
        if name in _TABLES:
            for key in type(value).model_fields:
                rows.append(
                    (f"[{name}] {key}", settings.source(name, key), _show(getattr(value, key)))
                )
        else:
            rows.append((name.upper(), settings.source(name), _show(value)))
    return rows


# -- where values come from ------------------------------------------------------------------


def _is_table(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


_TABLES = frozenset(n for n, f in ServerSettings.model_fields.items() if _is_table(f.annotation))
_SECRETS = frozenset(n for n, f in ServerSettings.model_fields.items() if _is_secret(f.annotation))
#: Settings that make no sense inside the agent file: the keys, and the file's own name.
_NOT_IN_FILE = _SECRETS | {"agent_file"}


@attrs.frozen
class _Origin:
    kind: str  # one of SOURCES
    name: str  # as the user wrote it: PORT, OPENAI_CHAT__MODEL, [agent] idle_timeout
    place: str | None = None  # "agent.toml line 12", ".env line 3"

    def where(self) -> str:
        return f"{self.place}: {self.name}" if self.place else self.name


@attrs.frozen
class _Layer:
    kind: str
    values: dict[tuple[str, ...], Any]
    names: dict[tuple[str, ...], str]
    text: str | None = None  # the file's text, to find a value's line
    path: Path | None = None

    def origin(self, path: tuple[str, ...]) -> _Origin:
        name = self.names.get(path) or ".".join(path)
        if self.kind == "file":
            line = _toml_line(self.text or "", path)
            table = isinstance(self.values.get(path), dict)
            name = f"[{path[0]}]" if table and len(path) == 1 else _toml_name(path)
            return _Origin("file", name, _at(self.path, line))
        if self.kind == ".env":
            line = _dotenv_line(self.text or "", name)
            return _Origin(".env", name, _at(self.path, line))
        return _Origin(self.kind, name)


def _at(path: Path | None, line: int | None) -> str:
    return f"{path} line {line}" if line else str(path)


def _leaves(data: Mapping[str, Any]) -> dict[tuple[str, ...], Any]:
    """``{"openai_chat": {"model": m}}`` as ``{("openai_chat", "model"): m}``; a table's keys
    are merged one by one, everything else is one value."""
    leaves: dict[tuple[str, ...], Any] = {}
    for key, value in data.items():
        if key in _TABLES and isinstance(value, Mapping):
            leaves.update({(key, k): v for k, v in value.items()})
        else:
            leaves[(key,)] = value
    return leaves


def _nest(leaves: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for path, value in leaves.items():
        if len(path) == 2:
            data.setdefault(path[0], {})[path[1]] = value
        else:
            data[path[0]] = value
    return data


class _MappingSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (the environment or ``.env``).

    A table is read only key by key (``ESPEAK__VOICE``), never whole from a variable named
    like it (``AGENT``), which could be anyone's.
    """

    def __init__(self, mapping: Mapping[str, str | None]) -> None:
        super().__init__(ServerSettings)
        self.env_vars = {
            k.lower(): v
            for k, v in mapping.items()
            if v not in (None, "") and k.lower() not in _TABLES
        }


def _environment_layer(mapping: Mapping[str, str | None], kind: str = "env") -> _Layer:
    try:
        values = _leaves(_MappingSource(mapping)())
    except _SourceError:
        raise SettingsError(_json_problem(mapping)) from None
    return _Layer(kind, values, {path: _variable(path, mapping) for path in values})


def _variable(path: tuple[str, ...], mapping: Mapping[str, Any]) -> str:
    """The variable that set ``path``, spelt as it was."""
    wanted = "__".join(path).lower()
    return next((k for k in mapping if k.lower() == wanted), wanted.upper())


def _json_problem(mapping: Mapping[str, str | None]) -> str:
    """Which variable holding a list is not JSON (pydantic-settings names only the field)."""
    for name, value in mapping.items():
        if _is_list(_annotation(tuple(name.lower().split("__")))):
            try:
                json.loads(value or "null")
            except ValueError:
                return f'{name}={value!r}: not JSON (a list is written as ["a", "b"])'
    return "a list setting in the environment is not JSON"


def _annotation(path: tuple[str, ...]) -> Any:
    """The type of the setting at ``path``, or None when there is none."""
    field = ServerSettings.model_fields.get(path[0])
    if field is None or len(path) > 2:
        return None
    if len(path) == 1:
        return field.annotation
    table = field.annotation.model_fields if path[0] in _TABLES else {}  # type: ignore[union-attr]
    return table[path[1]].annotation if path[1] in table else None


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(annotation) is tuple


def _dotenv_layer(path: Path, *, required: bool) -> _Layer:
    if not path.exists():
        if required:
            raise SettingsError(f"ENV_FILE={str(path)!r}: no such file")
        return _Layer(".env", {}, {})
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: cannot read it: {exc}") from None
    env = _environment_layer(dotenv_values(path), ".env")
    return attrs.evolve(env, text=text, path=path)


def _file_layer(path: Path) -> _Layer:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"AGENT_FILE={str(path)!r}: cannot read it: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message ends "(at line L, column C)"
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    for key in data:
        if key in _NOT_IN_FILE:
            line = _toml_line(text, (key,))
            where = "AGENT_FILE names the file" if key == "agent_file" else "keys"
            raise SettingsError(
                f"{_at(path, line)}: {key}: not allowed in the agent file ({where} belong in "
                "the environment or .env)"
            )
    return _Layer("file", _leaves(data), {}, text, path)


def _toml_name(path: tuple[str, ...]) -> str:
    return f"[{path[0]}] {path[1]}" if len(path) == 2 else path[0]


def _toml_line(text: str, path: tuple[str, ...]) -> int | None:
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


def _dotenv_line(text: str, name: str) -> int | None:
    pattern = re.compile(rf"\s*(export\s+)?{re.escape(name)}\s*=", re.IGNORECASE)
    for number, line in enumerate(text.splitlines(), 1):
        if pattern.match(line):
            return number
    return None


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


def _problem(error: Mapping[str, Any], origins: Mapping[tuple[str, ...], _Origin]) -> str:
    loc = tuple(str(part) for part in error["loc"])
    path = next((loc[:n] for n in range(len(loc), 0, -1) if loc[:n] in origins), loc[:2])
    origin = origins.get(path) or _Origin("default", ".".join(path))
    secret = path[0] in _SECRETS
    shown = masked(str(error["input"])) if secret else _short(error["input"])
    if error["type"] == "extra_forbidden":
        return f"{origin.where()}: not a setting{_suggestion(path)}"
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


def _suggestion(path: tuple[str, ...]) -> str:
    if len(path) == 2 and path[0] in _TABLES:
        known = list(ServerSettings.model_fields[path[0]].annotation.model_fields)  # type: ignore[union-attr]
    else:
        known = list(ServerSettings.model_fields)
    close = difflib.get_close_matches(path[-1].lower(), known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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
