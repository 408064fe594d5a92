"""The one settings layer: where each value comes from, what a bad one says, what is never shown."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import attrs
import pytest
from pydantic import BaseModel

from adapters.app import cli
from adapters.app.settings import (
    DeepgramFluxOptions,
    DeepgramListenOptions,
    DeepgramSpeechOptions,
    EspeakOptions,
    OpenAIChatOptions,
    OpenAISpeechOptions,
    ServerSettings,
    SettingsError,
)
from adapters.app.settings_messages import effective
from adapters.app.wiring import build_providers
from adapters.offline.espeak import Espeak
from adapters.providers.deepgram_flux import DeepgramFlux, FluxSettings
from adapters.providers.deepgram_stt import DeepgramSettings
from adapters.providers.deepgram_tts import AuraSettings
from adapters.providers.openai_chat import ChatSettings
from adapters.providers.openai_speech import SpeechSettings
from engine.config import AgentConfig

KEY = "Zq8xW3vK9pL2mN7r"  # distinctive, so any piece of it in an output would show


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- precedence: option > environment > .env > agent file > default -------------------------


def test_each_value_comes_from_the_highest_source_that_has_it(tmp_path):
    agent = write(
        tmp_path / "agent.toml",
        "port = 7001\nhost = 'file-host'\nmax_calls = 3\n\n"
        "[openai_chat]\nmodel = 'from-file'\nmax_tool_rounds = 5\n",
    )
    dotenv = write(
        tmp_path / "settings.env",
        f"PORT=7002\nHOST=dotenv-host\nOPENAI_CHAT__MODEL=from-dotenv\nAGENT_FILE={agent}\n",
    )
    env = {"ENV_FILE": str(dotenv), "PORT": "7003"}

    s = ServerSettings.from_env(env)
    assert (s.port, s.source("port")) == (7003, "env")
    assert (s.host, s.source("host")) == ("dotenv-host", ".env")
    assert (s.max_calls, s.source("max_calls")) == (3, "file")
    assert (s.drain_timeout, s.source("drain_timeout")) == (30.0, "default")
    # A table is merged key by key: one key from .env, another from the file.
    assert (s.openai_chat.model, s.source("openai_chat", "model")) == ("from-dotenv", ".env")
    assert (s.openai_chat.max_tool_rounds, s.source("openai_chat", "max_tool_rounds")) == (
        5,
        "file",
    )
    assert s.source("openai_chat", "temperature") == "default"
    assert s.env_file == dotenv and s.agent_file == agent

    s = ServerSettings.from_env(env, port=7004)
    assert (s.port, s.source("port")) == (7004, "option")


def test_the_working_directorys_env_file_is_read_only_for_the_real_environment(
    tmp_path, monkeypatch
):
    write(tmp_path / ".env", "MAX_CALLS=7\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ENV_FILE")
    monkeypatch.delenv("MAX_CALLS", raising=False)
    assert ServerSettings.from_env().max_calls == 7
    assert ServerSettings.from_env().env_file == Path(".env")
    assert ServerSettings.from_env({}).max_calls == 50  # a given mapping is the whole environment


def test_derived_defaults_follow_the_values_they_derive_from():
    s = ServerSettings.from_env({"PORT": "9100"})
    assert s.public_url == "http://127.0.0.1:9100" and s.source("public_url") == "default"
    assert not s.validate_signatures
    assert ServerSettings.from_env({"VOBIZ_AUTH_TOKEN": KEY}).validate_signatures
    off = ServerSettings.from_env({"VOBIZ_AUTH_TOKEN": KEY, "VALIDATE_SIGNATURES": "false"})
    assert not off.validate_signatures
    assert ServerSettings.from_env({"PUBLIC_URL": "https://a.example/"}).public_url == (
        "https://a.example"
    )


def test_empty_variables_count_as_unset():
    """``.env.example`` lists keys with nothing after the ``=``."""
    s = ServerSettings.from_env({"VOBIZ_AUTH_TOKEN": "", "PORT": "", "OPENAI_API_KEY": ""})
    assert s.vobiz_auth_token is None and s.port == 8000 and s.openai_api_key is None


def test_the_agent_section_builds_the_engines_own_config(tmp_path):
    agent = write(tmp_path / "a.toml", "[agent]\ngreeting = 'Hi'\nbackchannels = ['ok']\n")
    config = ServerSettings.from_env({"AGENT_FILE": str(agent), "AGENT__IDLE_TIMEOUT": "3"})
    assert config.agent_config() == AgentConfig(
        greeting="Hi", idle_timeout=3.0, backchannels=("ok",)
    )
    assert ServerSettings().agent_config() == AgentConfig()


# -- errors name the variable, or the file and line -----------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "abc"}, "PORT='abc': not an integer"),
        ({"MAX_CALLS": "-1"}, "MAX_CALLS='-1': must be at least 0"),
        ({"RECORD_AUDIO": "maybe"}, "RECORD_AUDIO='maybe': not true or false"),
        (
            {"STT_PROVIDER": "whisper"},
            "STT_PROVIDER='whisper': choose 'auto', 'offline', 'deepgram' or 'deepgram-flux'",
        ),
        ({"OPENAI_CHAT__MAX_TOOL_ROUNDS": "x"}, "OPENAI_CHAT__MAX_TOOL_ROUNDS='x': not an integer"),
        (
            {"AGENT__IDLE_TIMOUT": "3"},
            "AGENT__IDLE_TIMOUT: not a setting (did you mean idle_timeout?)",
        ),
        ({"HINTS": "a,b"}, 'HINTS=\'a,b\': not JSON (a list is written as ["a", "b"])'),
        ({"ENV_FILE": "/nonexistent/x.env"}, "ENV_FILE='/nonexistent/x.env': no such file"),
    ],
)
def test_a_bad_variable_is_named(env, message):
    with pytest.raises(SettingsError) as info:
        ServerSettings.from_env(env)
    assert str(info.value) == message


def test_every_bad_value_is_reported_at_once():
    with pytest.raises(SettingsError) as info:
        ServerSettings.from_env({"PORT": "abc", "DRAIN_TIMEOUT": "soon"})
    assert str(info.value).splitlines() == [
        "PORT='abc': not an integer",
        "DRAIN_TIMEOUT='soon': not a number",
    ]


def test_a_bad_env_file_line_is_named(tmp_path):
    dotenv = write(tmp_path / "x.env", "# the server\nPORT=abc\n")
    with pytest.raises(SettingsError) as info:
        ServerSettings.from_env({"ENV_FILE": str(dotenv)})
    assert str(info.value) == f"{dotenv} line 2: PORT='abc': not an integer"


def test_a_bad_agent_file_value_names_the_file_line_table_and_key(tmp_path):
    agent = write(tmp_path / "agent.toml", "[agent]\ngreeting = 'hi'\nidle_timeout = 'soon'\n")
    with pytest.raises(SettingsError) as info:
        ServerSettings.from_env({"AGENT_FILE": str(agent)})
    assert str(info.value) == f"{agent} line 3: [agent] idle_timeout='soon': not a number"


def test_a_misspelt_agent_file_key_or_table_is_named(tmp_path):
    agent = write(tmp_path / "agent.toml", "[agent]\ngreetng = 'hi'\n\n[espeek]\nvoice = 'en'\n")
    with pytest.raises(SettingsError) as info:
        ServerSettings.from_env({"AGENT_FILE": str(agent)})
    assert str(info.value).splitlines() == [
        f"{agent} line 2: [agent] greetng: not a setting (did you mean greeting?)",
        f"{agent} line 4: [espeek]: not a setting (did you mean espeak?)",
    ]


def test_invalid_toml_names_the_file_and_line(tmp_path):
    agent = write(tmp_path / "agent.toml", "[agent]\ngreeting = \n")
    with pytest.raises(SettingsError) as info:
        ServerSettings.from_env({"AGENT_FILE": str(agent)})
    assert str(info.value).startswith(f"{agent}: not valid TOML: ")
    assert "line 2" in str(info.value)


def test_a_missing_agent_file_is_named():
    with pytest.raises(SettingsError, match=r"^AGENT_FILE='nowhere.toml': cannot read it"):
        ServerSettings.from_env({"AGENT_FILE": "nowhere.toml"})


def test_keys_are_refused_in_the_agent_file_without_being_repeated(tmp_path):
    agent = write(tmp_path / "agent.toml", f"port = 9000\nopenai_api_key = '{KEY}'\n")
    with pytest.raises(SettingsError) as info:
        ServerSettings.from_env({"AGENT_FILE": str(agent)})
    assert str(info.value).startswith(f"{agent} line 2: openai_api_key: not allowed")
    assert KEY not in str(info.value)


# -- keys: masked everywhere ----------------------------------------------------------------


def test_keys_are_masked_in_reprs_and_in_the_effective_settings():
    s = ServerSettings.from_env({"OPENAI_API_KEY": KEY, "VOBIZ_AUTH_TOKEN": KEY[:10]})
    assert KEY not in repr(s) and KEY not in str(s) and KEY[:10] not in repr(s)
    rows = {name: (source, shown) for name, source, shown in effective(s)}
    assert rows["OPENAI_API_KEY"] == ("env", f"set ({len(KEY)} characters)")
    assert rows["VOBIZ_AUTH_TOKEN"] == ("env", "set (10 characters)")
    assert rows["DEEPGRAM_API_KEY"] == ("default", "not set")


def test_voice_agent_config_prints_every_setting_with_its_source(tmp_path, monkeypatch, capsys):
    agent = write(tmp_path / "agent.toml", "[espeak]\nrate_wpm = 150\n")
    dotenv = write(tmp_path / "x.env", f"DEEPGRAM_API_KEY={KEY}\nAGENT_FILE={agent}\n")
    monkeypatch.setenv("ENV_FILE", str(dotenv))
    monkeypatch.setenv("MAX_CALLS", "12")
    for name in ("PORT", "AGENT_FILE", "DEEPGRAM_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["config"]) == 0
    out = capsys.readouterr().out
    rows = [re.fullmatch(r"(\[\w+\] \w+|\w+)\s+(\S+)\s+(.*)", line) for line in out.splitlines()]
    lines = {m[1]: (m[2], m[3]) for m in rows if m}
    assert lines["MAX_CALLS"] == ("env", "12")
    assert lines["DEEPGRAM_API_KEY"] == (".env", f"set ({len(KEY)} characters)")
    assert lines["[espeak] rate_wpm"] == ("file", "150")
    assert lines["PORT"] == ("default", "8000")
    assert len(lines) == len(effective(ServerSettings()))  # every setting, each once
    assert f"# .env: {dotenv}" in out
    windows = {KEY[i : i + 4] for i in range(len(KEY) - 3)}
    assert not any(w in out for w in windows)


def test_voice_agent_config_names_a_bad_setting(monkeypatch, capsys):
    monkeypatch.setenv("PORT", "eighty")
    assert cli.main(["config"]) == 2
    assert capsys.readouterr().err == "voice-agent config: PORT='eighty': not an integer\n"


def test_serve_names_a_bad_setting_instead_of_a_traceback(monkeypatch, capsys):
    monkeypatch.setenv("STREAM_RETRIES", "11")
    assert cli.main(["serve", "--port", "0"]) == 2
    assert capsys.readouterr().err == "voice-agent: STREAM_RETRIES='11': must be at most 10\n"


# -- providers get their options from the settings ------------------------------------------


def test_each_provider_gets_its_options_from_the_agent_file(tmp_path):
    agent = write(
        tmp_path / "agent.toml",
        "[openai_chat]\nmodel = 'gpt-from-file'\n\n[openai_speech]\nvoice = 'cedar'\n\n"
        "[deepgram_listen]\nendpointing = 550\nkeyterms = ['Roma']\n\n"
        "[deepgram_speech]\nmodel = 'aura-2-test-en'\n\n[espeak]\nrate_wpm = 150\n",
    )
    env = {
        "AGENT_FILE": str(agent),
        "OPENAI_API_KEY": "openai-key",
        "DEEPGRAM_API_KEY": "deepgram-key",
        "DEEPGRAM_URL": "ws://127.0.0.1:9",
    }
    providers, _ = build_providers(ServerSettings.from_env(env))
    assert providers.names == {
        "stt": "deepgram",
        "llm": "openai",
        "tts": "openai",
        "vad": "webrtc",
        "barge_in": "both",
    }
    assert providers.llm.settings.model == "gpt-from-file"
    assert providers.llm.settings.api_key == "openai-key"
    assert providers.tts.settings.voice == "cedar"
    listen = providers.stt().settings
    assert (listen.endpointing, listen.keyterms) == (550, ("Roma",))
    assert (listen.api_key, listen.url) == ("deepgram-key", "ws://127.0.0.1:9")

    aura, _ = build_providers(ServerSettings.from_env(env, tts_provider="deepgram"))
    assert aura.tts.settings.model == "aura-2-test-en"
    offline, _ = build_providers(
        ServerSettings.from_env(env, llm_provider="scripted", tts_provider="offline")
    )
    assert offline.tts.espeak.rate_wpm == 150


def test_flux_listens_with_its_own_table_and_its_turn_starts_can_barge_in(tmp_path):
    agent = write(tmp_path / "agent.toml", "[deepgram_flux]\neager_eot_threshold = 0.4\n")
    env = {
        "AGENT_FILE": str(agent),
        "DEEPGRAM_API_KEY": "deepgram-key",
        "STT_PROVIDER": "deepgram-flux",
    }
    providers, _ = build_providers(ServerSettings.from_env(env))
    recognizer = providers.stt()
    assert isinstance(recognizer, DeepgramFlux)
    assert (recognizer.settings.eager_eot_threshold, recognizer.settings.api_key) == (
        0.4,
        "deepgram-key",
    )
    assert providers.names["stt"] == "deepgram-flux"
    assert providers.vad is not None and providers.stt_speech_events  # "both", the default
    stt_only, _ = build_providers(ServerSettings.from_env(env, barge_in_source="stt"))
    assert stt_only.vad is None and stt_only.stt_speech_events
    vad_only, _ = build_providers(ServerSettings.from_env(env, barge_in_source="vad"))
    assert vad_only.vad is not None and not vad_only.stt_speech_events


def test_a_forced_provider_without_its_key_is_refused_at_start_up():
    with pytest.raises(ValueError, match=r"^LLM_PROVIDER='openai' needs OPENAI_API_KEY"):
        build_providers(ServerSettings.from_env({"LLM_PROVIDER": "openai"}))
    with pytest.raises(ValueError, match=r"^STT_PROVIDER='deepgram' needs DEEPGRAM_API_KEY"):
        build_providers(ServerSettings.from_env({"STT_PROVIDER": "deepgram"}))


@pytest.mark.parametrize(
    ("table", "provider"),
    [
        (OpenAIChatOptions, ChatSettings),
        (OpenAISpeechOptions, SpeechSettings),
        (DeepgramSpeechOptions, AuraSettings),
        (DeepgramListenOptions, DeepgramSettings),
        (DeepgramFluxOptions, FluxSettings),
        (EspeakOptions, Espeak),
    ],
)
def test_each_table_matches_its_providers_own_defaults(table, provider):
    """A provider's default changed in one place only would make the file lie about it."""
    if attrs.has(provider):
        defaults = {f.name: f.default for f in attrs.fields(provider)}
    else:
        defaults = {name: p.default for name, p in inspect.signature(provider).parameters.items()}
    for name, field in table.model_fields.items():
        assert name in defaults, f"{provider.__name__} has no {name}"
        assert field.default == defaults[name], name


# -- the documentation names what exists ------------------------------------------------------

TOP_LEVEL = {
    name.upper()
    for name, field in ServerSettings.model_fields.items()
    if not isinstance(field.default, BaseModel)
}


def test_the_readme_table_names_every_setting_and_nothing_else():
    rows = [line for line in Path("README.md").read_text().splitlines() if line.startswith("| `")]
    named = set(re.findall(r"`([A-Z][A-Z_]+)`", "\n".join(rows)))
    assert TOP_LEVEL - named == set()
    assert named - TOP_LEVEL == {"ENV_FILE"}


def test_the_env_example_loads_and_names_only_settings():
    text = Path(".env.example").read_text()
    names = set(re.findall(r"^#? ?([A-Z][A-Z_]+)=", text, re.MULTILINE))
    tables = {n for n in names if "__" in n}
    assert names - tables <= TOP_LEVEL
    for name in tables:
        table, key = name.lower().split("__")
        assert key in ServerSettings.model_fields[table].annotation.model_fields
    s = ServerSettings.from_env({"ENV_FILE": ".env.example"})
    assert s.public_url == "https://agent.example.com" and s.source("port") == ".env"
    assert s.vobiz_auth_token is None  # listed empty: unset
