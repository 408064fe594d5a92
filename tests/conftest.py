"""What every test process shares.

Every hypercorn server in the tests runs with the connection-close repairs:
``serve_app`` installs them for the real app; the tests that serve a fake straight
through hypercorn (the simulator's fake agent, the quart OpenAI fake) would otherwise
depend on test order for them. See ``adapters/app/hypercorn_repair.py``.

And no test reads a developer's own ``.env`` (keys, a public URL): ``ENV_FILE`` points
at an empty file for the whole run, subprocesses included. Tests of ``.env`` itself name
their own file.
"""

import os

from adapters.app import hypercorn_repair

os.environ["ENV_FILE"] = os.devnull
hypercorn_repair.install()
