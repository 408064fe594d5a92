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

Reading the sources is :mod:`adapters.app.settings_sources`; the words for a bad
value, and ``voice-agent config``'s listing, are :mod:`adapters.app.settings_messages`.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
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
from pydantic_settings import BaseSettings, SettingsConfigDict

from adapters.app.settings_messages import problems
from adapters.app.settings_sources import (
    SOURCES,
    Origin,
    SettingPath,
    SettingsError,
    nest,
    read_sources,
)
from adapters.providers.deepgram_flux import FluxSettings
from adapters.providers.deepgram_stt import DeepgramSettings
from adapters.vobiz.rest import DEFAULT_BASE_URL as VOBIZ_API_URL
from engine.config import AgentConfig

__all__ = [
    "SOURCES",
    "AgentOptions",
    "DeepgramFluxOptions",
    "DeepgramListenOptions",
    "DeepgramSpeechOptions",
    "EspeakOptions",
    "OpenAIChatOptions",
    "OpenAISpeechOptions",
    "ServerSettings",
    "SettingsError",
    "reveal",
]


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


class EspeakOptions(_Table):
    """``[espeak]``: the offline voice (``adapters/offline/espeak.py``)."""

    voice: str = "en-us"
    rate_wpm: int = 165
    pitch: int = 50


def _table_of(cls: type, name: str, doc: str, leave_out: tuple[str, ...] = ()) -> type[_Table]:
    """A table made field for field from an attrs class, less the fields in ``leave_out``.

    Made from the class rather than copied, so the engine and each provider stay the
    one definition of their settings (the engine's are also written into every call log).
    """
    types = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for field in attrs.fields(cls):
        if field.name in leave_out:
            continue
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            factory = default.factory
            fields[field.name] = (types[field.name], Field(default_factory=factory))
        else:
            fields[field.name] = (types[field.name], default)
    return _create_model(name, __base__=_Table, __doc__=doc, **fields)


AgentOptions = _table_of(AgentConfig, "AgentOptions", "``[agent]``: engine/config.py")
#: The key and the address come from ``DEEPGRAM_API_KEY`` and ``DEEPGRAM_URL``, not the table.
DeepgramListenOptions = _table_of(
    DeepgramSettings,
    "DeepgramListenOptions",
    "``[deepgram_listen]``: Deepgram's recognizer (``adapters/providers/deepgram_stt.py``).",
    leave_out=("api_key", "url"),
)
DeepgramFluxOptions = _table_of(
    FluxSettings,
    "DeepgramFluxOptions",
    "``[deepgram_flux]``: Deepgram Flux, the recognizer that ends turns (``deepgram_flux.py``).",
    leave_out=("api_key", "url"),
)


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
    #: Where the workers of a deployment share call logs, leases and answers: empty for the
    #: log folder (the processes of one host), or a ``redis://`` URL (several hosts).
    log_store: str = ""
    record_audio: bool = False
    #: The console log's lines: text, or one JSON object each (``adapters/ops/logs.py``).
    log_format: Literal["text", "json"] = "text"
    #: Calls held at once (answered and waiting for their stream, or live): the ceiling.
    max_calls: int = Field(50, ge=0)
    #: Below the ceiling, a call is admitted only while the process's measured load has room
    #: for it (``adapters/app/load_gauge.py``): CPU as a share of one core (0: not checked)
    #: and the event loop's lateness in seconds (0: not checked).
    admission_cpu: float = Field(0.6, ge=0, le=1)
    admission_loop_lag: float = Field(0.015, ge=0)
    #: The media stream's format (the answer's ``contentType``); checked when the app is made.
    media_format: str = "audio/x-mulaw;rate=8000"
    #: Vobiz ``maxRetries``: reconnects of a dropped media stream; the call waits for them.
    stream_retries: int = Field(0, ge=0, le=10)
    drain_timeout: float = Field(30.0, ge=0)
    #: ``voice-agent serve``'s processes on the port (``--workers``); unset: one per core
    #: this process may use (its CPU affinity and cgroup quota).
    workers: int | None = Field(None, ge=1, le=256)
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
    deepgram_listen: DeepgramListenOptions = DeepgramListenOptions()  # type: ignore[valid-type]
    deepgram_flux: DeepgramFluxOptions = DeepgramFluxOptions()  # type: ignore[valid-type]
    espeak: EspeakOptions = EspeakOptions()
    #: The offline scripted brain's script (``adapters/offline/scripted.py``); built-in when unset.
    script: Path | None = None
    #: Words the offline recognizer should expect (the scripted brain brings its own).
    hints: tuple[str, ...] = ()

    _origins: dict[SettingPath, Origin] = PrivateAttr(default_factory=dict)
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
        sources = read_sources(cls, options, outside, ".env" if env is None else None)
        try:
            settings = cls.model_validate(nest(sources.values))
        except ValidationError as exc:
            raise SettingsError(problems(cls, exc, sources.origins)) from None
        settings._origins = sources.origins
        settings._env_file = sources.env_file
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
        new._origins = self._origins | {(k,): Origin("option", k) for k in changes}
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
