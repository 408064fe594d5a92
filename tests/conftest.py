"""Every hypercorn server in the tests runs with the connection-close repairs.

``serve_app`` installs them for the real app; the tests that serve a fake straight
through hypercorn (the simulator's fake agent, the quart OpenAI fake) would otherwise
depend on test order for them. See ``adapters/app/hypercorn_repair.py``.
"""

from adapters.app import hypercorn_repair

hypercorn_repair.install()
