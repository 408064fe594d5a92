"""Server settings from the environment, and the agent file.

Every setting has a default that runs a local, offline agent; real
providers and the Vobiz account switch on when their keys are present.
Keys are read from the environment only and never written to a log.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from engine.config import AgentConfig


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


@attrs.frozen(kw_only=True)
class ServerSettings:
    public_url: str = "http://127.0.0.1:8000"
    host: str = "127.0.0.1"
    port: int = 8000
    stream_secret: str | None = attrs.field(default=None, repr=False)
    vobiz_auth_id: str | None = None
    vobiz_auth_token: str | None = attrs.field(default=None, repr=False)
    vobiz_api_url: str | None = None
    #: A sub-account's callbacks also carry ``X-Vobiz-Signature-MA-*``, signed with this token.
    vobiz_parent_auth_token: str | None = attrs.field(default=None, repr=False)
    call_log_dir: Path = Path("calls")
    max_calls: int = 50
    agent_file: Path | None = None
    record_audio: bool = False
    validate_signatures: bool = False
    #: The media stream's format (the answer's ``contentType``); the call adapts to what ``start`` says.
    media_format: str = "audio/x-mulaw;rate=8000"
    #: Vobiz ``maxRetries``: reconnects of a dropped media stream (0-10); the call waits for them.
    stream_retries: int = 0
    drain_timeout: float = 30.0
    stt: str = "auto"  # auto | offline | deepgram
    llm: str = "auto"  # auto | scripted | openai
    tts: str = "auto"  # auto | offline | openai | deepgram
    vad: str = "webrtc"  # the local VAD: webrtc | silero
    barge_in: str = "both"  # what notices the caller talking over the agent: vad | stt | both

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ServerSettings:
        env = os.environ if env is None else env
        port = int(env.get("PORT", "8000"))
        token = env.get("VOBIZ_AUTH_TOKEN") or None
        values: dict[str, Any] = {
            "public_url": env.get("PUBLIC_URL", f"http://127.0.0.1:{port}").rstrip("/"),
            "host": env.get("HOST", "127.0.0.1"),
            "port": port,
            "stream_secret": env.get("STREAM_SECRET") or None,
            "vobiz_auth_id": env.get("VOBIZ_AUTH_ID") or None,
            "vobiz_auth_token": token,
            "vobiz_api_url": env.get("VOBIZ_API_URL") or None,
            "vobiz_parent_auth_token": env.get("VOBIZ_PARENT_AUTH_TOKEN") or None,
            "call_log_dir": Path(env.get("CALL_LOG_DIR", "calls")),
            "max_calls": int(env.get("MAX_CALLS", "50")),
            "agent_file": Path(env["AGENT_FILE"]) if env.get("AGENT_FILE") else None,
            "record_audio": _bool(env.get("RECORD_AUDIO"), False),
            "validate_signatures": _bool(env.get("VALIDATE_SIGNATURES"), token is not None),
            "drain_timeout": float(env.get("DRAIN_TIMEOUT", "30")),
            "stream_retries": int(env.get("STREAM_RETRIES", "0")),
            "media_format": env.get("MEDIA_FORMAT", "audio/x-mulaw;rate=8000"),
            "stt": env.get("STT_PROVIDER", "auto"),
            "llm": env.get("LLM_PROVIDER", "auto"),
            "tts": env.get("TTS_PROVIDER", "auto"),
            "barge_in": env.get("BARGE_IN_SOURCE", "both"),
            "vad": env.get("LOCAL_VAD", "webrtc"),
        }
        values.update(overrides)
        return cls(**values)

    @property
    def ws_base(self) -> str:
        """The media WebSocket base URL: wss for an https public URL."""
        if self.public_url.startswith("https://"):
            return "wss://" + self.public_url.removeprefix("https://")
        return "ws://" + self.public_url.removeprefix("http://")


def load_agent_file(path: Path | None) -> tuple[AgentConfig, dict[str, Any]]:
    """The agent's conversation settings (``[agent]``) and the rest of the file (provider options).

    A typo in a setting name is an error naming the file, not a silent default.
    """
    if path is None:
        return AgentConfig(), {}
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"agent file {path}: {exc}") from None
    agent = data.pop("agent", {})
    try:
        return AgentConfig.from_dict(agent), data
    except (TypeError, ValueError) as exc:
        raise ValueError(f"agent file {path}: [agent]: {exc}") from None
