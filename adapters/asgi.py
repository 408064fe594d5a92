"""The app for an ASGI server's command line: ``uv run hypercorn -k trio adapters.asgi:app``.

Built from the environment at import, like ``voice-agent serve`` (which also drains
live calls on SIGTERM; under hypercorn's own command line, give live calls time with
``--graceful-timeout``). Always use hypercorn's trio worker (``-k trio``): the app runs
on trio. Importing this module repairs hypercorn's connection close
(:mod:`adapters.hypercorn_fixes`), as ``voice-agent serve`` does.
"""

from adapters import hypercorn_fixes
from adapters.cli import build_app, settle
from adapters.settings import ServerSettings

hypercorn_fixes.install()
app = build_app(ServerSettings.from_env())


@app.before_serving
async def _settle() -> None:
    settle(app)
