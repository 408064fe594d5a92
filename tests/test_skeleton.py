import engine.commands
import engine.events


def test_contract_types_are_frozen():
    for cls in engine.events.EVENT_TYPES + engine.commands.COMMAND_TYPES:
        assert cls.__attrs_attrs__ is not None
        assert cls.__setattr__ is not object.__setattr__
