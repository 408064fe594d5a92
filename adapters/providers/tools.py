"""Tools the language model may call: the two the engine acts on, and user-defined ones.

``end_call`` and ``transfer_call`` change the call itself, so the language
model adapter only declares them and hands each call to the engine. Every
other tool is a plain Python function in a module named in the settings; the
adapter runs it and feeds the result back to the model, so the engine never
learns that a lookup happened. A tools module looks like this::

    from adapters.providers.tools import tool

    @tool(parameters={"type": "object",
                      "properties": {"city": {"type": "string"}},
                      "required": ["city"]})
    def weather(city: str) -> str:
        "Today's weather in a city."
        return f"Sunny in {city}"

Functions may be sync or async. Sync ones run in a worker thread, because a
slow lookup on the event loop would stall the caller's audio.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import trio

NO_ARGUMENTS: Mapping[str, Any] = {"type": "object", "properties": {}}

END_CALL = "end_call"
TRANSFER_CALL = "transfer_call"


@attrs.frozen
class Tool:
    """A function the model may call, with the JSON schema of its keyword arguments."""

    fn: Callable[..., Any]
    name: str
    description: str
    parameters: Mapping[str, Any] = NO_ARGUMENTS

    def declaration(self) -> dict[str, Any]:
        """The entry for the ``tools`` list of a chat request."""
        return declare(self.name, self.description, self.parameters)

    async def call(self, arguments: str) -> str:
        """Run the function on the model's JSON arguments; the result is text for the model.

        Bad arguments and exceptions come back as an ``{"error": …}`` result
        rather than failing the reply: the model can apologise or try again.
        """
        try:
            kwargs = json.loads(arguments or "{}")
            if not isinstance(kwargs, dict):
                raise TypeError("arguments must be a JSON object")
            if inspect.iscoroutinefunction(self.fn):
                result = await self.fn(**kwargs)
            else:
                result = await trio.to_thread.run_sync(
                    lambda: self.fn(**kwargs), abandon_on_cancel=True
                )
        except Exception as exc:
            return json.dumps({"error": f"{type(exc).__name__}: {exc}"})
        return result if isinstance(result, str) else json.dumps(result, default=str)


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> Any:
    """Make ``fn`` a :class:`Tool`; works as ``tool(fn, …)``, ``@tool`` and ``@tool(…)``.

    The name defaults to the function's, the description to its docstring.
    """

    def wrap(f: Callable[..., Any]) -> Tool:
        return Tool(
            fn=f,
            name=name or f.__name__,
            description=description or inspect.getdoc(f) or "",
            parameters=parameters if parameters is not None else NO_ARGUMENTS,
        )

    return wrap(fn) if fn is not None else wrap


def load_tools(module_name: str) -> tuple[Tool, ...]:
    """The tools of a module: its ``TOOLS`` list if it has one, else every module-level Tool.

    A user tool may not take a built-in name: the engine must stay the only
    one deciding to hang up or transfer.
    """
    module = importlib.import_module(module_name)
    found: Iterable[Any] = getattr(module, "TOOLS", None) or vars(module).values()
    tools = tuple(t for t in found if isinstance(t, Tool))
    names = [t.name for t in tools]
    clash = {END_CALL, TRANSFER_CALL} & set(names)
    if clash:
        raise ValueError(f"{module_name}: tool names reserved for the engine: {sorted(clash)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{module_name}: duplicate tool names: {names}")
    return tools


def declare(name: str, description: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """One function tool in the Chat Completions ``tools`` shape."""
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": dict(parameters)},
    }


BUILTIN_DECLARATIONS: tuple[dict[str, Any], ...] = (
    declare(
        END_CALL,
        "Hang up the phone. Call it only after you have said goodbye in your reply.",
        {
            "type": "object",
            "properties": {"reason": {"type": "string", "description": "Why the call ends."}},
        },
    ),
    declare(
        TRANSFER_CALL,
        "Transfer the caller to a person or another line. Tell the caller before you call it.",
        {
            "type": "object",
            "properties": {
                "to": {
                    "type": "string",
                    "description": "E.164 phone number (+14155550100) or SIP URI (sip:desk@example.com).",
                },
                "reason": {"type": "string", "description": "Why the caller is transferred."},
            },
            "required": ["to"],
        },
    ),
)
"""How ``end_call`` and ``transfer_call`` are declared to the model (no ``strict``: local servers vary)."""

BUILTIN_NAMES = frozenset({END_CALL, TRANSFER_CALL})
