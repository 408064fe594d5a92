"""``voice-agent serve --workers N``: N server processes on one port, one per core.

One trio loop runs on one core, and calls are independent, so a host serves
more calls with more processes. The parent binds the port once and hands the
listening socket to every worker (hypercorn's ``fd://`` bind), as gunicorn and
hypercorn's own workers share theirs: the kernel gives each new connection to a
worker waiting in ``accept``, so a worker busy with its calls takes fewer. Each
worker admits calls by its own measured load (:mod:`adapters.app.load_gauge`).
The parent serves nothing: it starts the workers, starts another when one dies,
and on SIGTERM or SIGINT passes the signal on and waits while they drain.

The workers share, through the environment:

- the stream secret: a token minted by one worker's ``/answer`` is checked by
  whichever worker the media socket reaches (a random secret for this run when
  ``STREAM_SECRET`` is unset);
- the call store (``LOG_STORE``; by default the call-log folder): any worker
  starts a call another answered, and a stream that reconnects to another
  worker than its call's asks for the call, which its holder hands over
  (:meth:`adapters.call.store.CallStore.ask_for`); the call goes on from its log;
- a folder for Prometheus figures (``PROMETHEUS_MULTIPROC_DIR``, made for the
  run when unset), so ``/metrics`` on any worker shows them all.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import trio

from adapters.app.settings import ServerSettings
from adapters.ops import logs
from adapters.ops.metrics import MULTIPROC_ENV

log = logging.getLogger("voice_agent.workers")

#: The listening socket's descriptor, in a worker's environment.
LISTEN_FD_ENV = "VOICE_AGENT_LISTEN_FD"
#: A worker that lived less than this was failing at start: the next waits longer.
QUICK_EXIT = 10.0
#: The wait before starting a worker again, doubled after each quick exit up to the cap.
RESTART_DELAY = 0.5
RESTART_DELAY_CAP = 30.0
#: Connections waiting for a worker's ``accept`` (hypercorn's own default is 100).
BACKLOG = 1024
#: cgroup v2's CPU limit: "<quota> <period>" in microseconds, or "max <period>".
CPU_QUOTA = Path("/sys/fs/cgroup/cpu.max")
#: The status of a setting that cannot work (``voice-agent`` says it on stderr).
CONFIG_ERROR = 2


def default_workers(quota_file: Path = CPU_QUOTA) -> int:
    """The cores this process may use: its CPU affinity (``taskset``, a cpuset), capped by
    its cgroup's CPU quota (a container's CPU limit), not the host's count."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = quota_file.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota here
    return max(1, cores)


def listen_fd() -> int | None:
    """The port's socket when this process is a worker of ``serve --workers``."""
    value = os.environ.get(LISTEN_FD_ENV)
    return int(value) if value else None


class Workers:
    """The parent of ``serve --workers N`` (N > 1)."""

    def __init__(self, count: int, settings: ServerSettings) -> None:
        self.count = count
        self.settings = settings
        self.running: dict[int, trio.Process] = {}
        self.stopping = False
        self.config_error = False

    async def run(self) -> int:
        """Serve until interrupted; 0 once every worker has drained, 2 for a setting that
        cannot work (a worker said which on stderr)."""
        listener = _listen(self.settings.host, self.settings.port)
        port = listener.getsockname()[1]  # the one chosen, for --port 0
        if port != self.settings.port:
            self.settings = self.settings.with_values(port=port)
        environment = self._environment(listener.fileno())
        made = environment.get(MULTIPROC_ENV) if MULTIPROC_ENV not in os.environ else None
        try:
            # Signals are ours for the whole run: one that came again during the drain
            # would otherwise stop the parent and leave its workers to stop alone.
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._stop_when_told, signals)
                    async with trio.open_nursery() as workers:
                        for index in range(self.count):
                            workers.start_soon(self._keep, index, environment, listener.fileno())
                        log.info(
                            "%d workers on http://%s:%d; each says when it serves",
                            self.count,
                            self.settings.host,
                            self.settings.port,
                        )
                    nursery.cancel_scope.cancel()
        finally:
            listener.close()
            if made:
                shutil.rmtree(made, ignore_errors=True)
        return CONFIG_ERROR if self.config_error else 0

    async def _stop_when_told(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            if self.stopping:
                log.info("%s: already stopping, waiting for the workers' drain", _name(signum))
            else:
                self._stop_all()

    def _environment(self, fd: int) -> dict[str, str]:
        environment = dict(os.environ)
        environment[LISTEN_FD_ENV] = str(fd)
        if self.settings.stream_secret is None:
            # Every worker must check the tokens every other worker mints.
            environment["STREAM_SECRET"] = secrets.token_urlsafe(32)
            log.warning(
                "STREAM_SECRET is not set: the workers share a random secret for this run "
                "(set one to share tokens with other hosts, or across restarts)"
            )
        if MULTIPROC_ENV not in environment:
            environment[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="voice-agent-metrics-")
        return environment

    async def _keep(self, index: int, environment: dict[str, str], fd: int) -> None:
        """Run worker ``index``, and another in its place whenever it dies."""
        delay = RESTART_DELAY
        host, port = self.settings.host, str(self.settings.port)
        command = [sys.executable, "-m", "adapters.app.cli", "serve", "--workers", "1"]
        command += ["--host", host, "--port", port]  # its public URL's default, as ours
        while not self.stopping:
            started = trio.current_time()
            process = await trio.lowlevel.open_process(
                command,
                env=environment | {"VOICE_AGENT_WORKER": str(index)},
                pass_fds=(fd,),
                # Its own process group: a Ctrl-C reaches the parent only, which passes
                # one SIGTERM on (a second signal would cut a worker's drain short).
                start_new_session=True,
            )
            self.running[index] = process
            log.info("worker %d started (pid %d)", index, process.pid)
            try:
                code = await process.wait()
            finally:
                if process.returncode is None:  # the parent is being cancelled
                    process.kill()
            del self.running[index]
            if self.stopping:
                log.info("worker %d (pid %d) stopped (%s)", index, process.pid, code)
                return
            if code == CONFIG_ERROR:  # restarting will not mend a setting: stop them all
                self.config_error = True
                self._stop_all()
                return
            lived = trio.current_time() - started
            delay = min(delay * 2, RESTART_DELAY_CAP) if lived < QUICK_EXIT else RESTART_DELAY
            log.error(
                "worker %d (pid %d) exited with %s; another starts in %.1f s "
                "(its calls go on elsewhere when Vobiz retries their streams)",
                index,
                process.pid,
                code,
                delay,
            )
            await trio.sleep(delay)

    def _stop_all(self) -> None:
        """SIGTERM to every worker: each drains its calls (``DRAIN_TIMEOUT``) and exits."""
        self.stopping = True
        for process in self.running.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        if self.running:
            log.info("stopping %d workers: they drain their calls first", len(self.running))


def _name(signum: int) -> str:
    return signal.Signals(signum).name


def _listen(host: str, port: int) -> socket.socket:
    """The port every worker accepts on, bound once here."""
    from adapters.app.serving import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        listener = socket.create_server((host, port), family=family, backlog=BACKLOG)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    listener.set_inheritable(True)
    return listener


async def serve_workers(count: int, host: str | None, port: int | None) -> int:
    """``voice-agent serve --workers N`` with N > 1."""
    from adapters.app.server import check_media_format
    from adapters.app.serving import ConfigError, serve_settings

    try:
        settings = serve_settings(host, port)
        check_media_format(settings)  # the rest a worker finds as it starts (status 2)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    logs.use_format(settings.log_format)
    return await Workers(count, settings).run()
