import engine.commands
import engine.events


def test_contract_types_are_frozen():
    for cls in engine.events.EVENT_TYPES + engine.commands.COMMAND_TYPES:
        assert cls.__attrs_attrs__ is not None
        assert cls.__setattr__ is not object.__setattr__


def test_the_example_agent_file_loads_and_wires_the_offline_providers():
    from adapters.app.settings import ServerSettings
    from adapters.app.wiring import build_providers

    settings = ServerSettings.from_env(
        {"AGENT_FILE": "agent.example.toml"},
        stt_provider="offline",
        llm_provider="scripted",
        tts_provider="offline",
    )
    assert settings.agent_config().greeting == "Hello, Trattoria Roma, how can I help you?"
    providers, _ = build_providers(settings)
    assert providers.names["tts"] == "offline"
    assert providers.tts.espeak.rate_wpm == 165
