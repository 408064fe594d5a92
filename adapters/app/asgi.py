"""The app for an ASGI server's command line: ``uv run hypercorn -k trio adapters.app.asgi:app``.

Built from the environment at import and admitting calls by measured load, like
``voice-agent serve`` (which also drains live calls on SIGTERM; under hypercorn's own
command line, give live calls time with ``--graceful-timeout``). Always use hypercorn's trio worker (``-k trio``): the app runs
on trio. Importing this module repairs hypercorn's connection close
(:mod:`adapters.app.hypercorn_repair`), as ``voice-agent serve`` does.
"""

from adapters.app import hypercorn_repair
from adapters.app.serving import build_app, settle, watch_load
from adapters.app.settings import ServerSettings

hypercorn_repair.install()
app = build_app(ServerSettings.from_env())


@app.before_serving
async def _settle() -> None:
    settle(app)
    gauge = watch_load(app)
    if gauge is not None:
        app.nursery.start_soon(gauge.run)
