import engine.commands
import engine.events


def test_contract_types_are_frozen():
    for cls in engine.events.EVENT_TYPES + engine.commands.COMMAND_TYPES:
        assert cls.__attrs_attrs__ is not None
        assert cls.__setattr__ is not object.__setattr__


def test_the_example_agent_file_loads_and_wires_the_offline_providers():
    from pathlib import Path

    from adapters.app.settings import ServerSettings, load_agent_file
    from adapters.app.wiring import build_providers

    config, extra = load_agent_file(Path("agent.example.toml"))
    assert config.greeting == "Hello, Trattoria Roma, how can I help you?"
    settings = ServerSettings.from_env({}, stt="offline", llm="scripted", tts="offline")
    providers, _ = build_providers(settings, config, extra)
    assert providers.names["tts"] == "offline"
    assert providers.tts.espeak.rate_wpm == 165


def test_a_misspelt_agent_setting_is_an_error_naming_the_file(tmp_path):
    import pytest

    from adapters.app.settings import load_agent_file

    path = tmp_path / "agent.toml"
    path.write_text('[agent]\ngreetng = "hi"\n')
    with pytest.raises(ValueError, match=r"agent.toml.*greetng"):
        load_agent_file(path)
