"""Admission by measured load: the window's arithmetic as tables, then over real sockets."""

import httpx
import trio
from stand_ins import quiet

from adapters.app.load_gauge import LoadGauge, LoadLimits, LoadWindow
from adapters.app.server import create_app
from adapters.app.serving import serve_on_loopback
from adapters.app.settings import ServerSettings
from engine.config import AgentConfig

LIMITS = LoadLimits(cpu=0.7, loop_lag=0.015, window=2.0, young=10.0, first_call_cpu=0.02)


def window_at(cpu: float, lag: float = 0.001, calls: int = 0, seconds: float = 2.0) -> LoadWindow:
    """A window of samples every 50 ms at a steady ``cpu`` share of one core."""
    window = LoadWindow(LIMITS)
    steps = round(seconds / 0.05)
    for i in range(steps + 1):
        t = i * 0.05
        window.sample(t, cpu * t, lag, calls)
    return window


def test_a_call_is_admitted_while_the_cpu_has_room_for_it():
    assert window_at(0.5).refusal() is None
    assert window_at(0.69).refusal() == (
        "CPU 69% of a core, 0 call(s) at 2.0% each: 71% with one more (limit 70%)"
    )


def test_calls_that_have_not_shown_their_load_count_at_a_calls_cost():
    # A burst: the CPU has not seen them yet, the count has.
    window = window_at(0.1)
    assert window.refusal(calls=33) is None  # 0.02 x 33 + 0.02 = 0.68
    assert window.refusal(calls=35) == (
        "CPU 10% of a core, 35 call(s) at 2.0% each: 72% with one more (limit 70%)"
    )
    # Calls whose load shows are not counted twice: the larger of the two counts.
    assert window_at(0.6, calls=20).refusal() is None  # max(0.60, 0.40) + 0.02
    assert window_at(0.6, calls=20).refusal(calls=40) is not None  # max(0.60, 0.80) + 0.02


def test_a_late_event_loop_refuses_calls_whatever_the_cpu_says():
    assert window_at(0.2, lag=0.030).refusal() == "event loop 30 ms late (limit 15 ms)"
    # A few late wake-ups (a collection, a burst) are not a saturated loop.
    window = window_at(0.2, lag=0.001)
    for i in range(5):
        window.sample(2.0 + i * 0.01, 0.2 * (2.0 + i * 0.01), 0.050, 0)
    assert window.refusal() is None


def test_what_a_call_costs_is_learned_when_no_call_is_starting():
    window = window_at(0.3, calls=10)
    assert window.call_cpu == 0.03
    # While calls are starting the figure is not updated: they have not shown their load.
    window.admitted(2.0)
    window.sample(2.05, 0.9 * 2.05, 0.001, 11)
    assert window.call_cpu == 0.03


def test_limits_of_zero_admit_everything():
    window = LoadWindow(LoadLimits(cpu=0, loop_lag=0))
    for i in range(41):
        window.sample(i * 0.05, 1.0 * i * 0.05, 0.5, 100)
    assert window.refusal() is None


class Clock:
    """A CPU clock the test sets: the process uses ``share`` of a core from now on."""

    def __init__(self) -> None:
        self.share = 0.0
        self.cpu = 0.0
        self.last = trio.current_time()

    def __call__(self) -> float:
        now = trio.current_time()
        self.cpu += (now - self.last) * self.share
        self.last = now
        return self.cpu


async def test_over_its_cpu_limit_the_server_answers_busy_at_once_and_health_says_why(tmp_path):
    settings = ServerSettings.from_env(
        {},
        call_log_dir=tmp_path,
        stream_secret="k" * 32,
        admission_cpu=0.7,
        admission_loop_lag=0,  # the loop's lateness is this busy test machine's
    )
    app = create_app(settings, AgentConfig(), quiet())
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        base = await serve_on_loopback(nursery, app, shutdown, measure_load=True)
        gauge = app.switchboard.load
        assert isinstance(gauge, LoadGauge)
        cpu = gauge.cpu_clock = Clock()  # what the process uses is the test's to say
        gauge.wall_clock = trio.current_time
        async with httpx.AsyncClient(base_url=base) as http:
            cpu.share = 0.95
            health = await _health_when(http, "busy")
            assert health.status_code == 503
            body = health.json()
            assert body["load"]["refusing"].startswith("CPU 95% of a core")
            reply = await http.post("/answer", data={"CallUUID": "c1", "From": "+1", "To": "+2"})
            assert "<Stream" not in reply.text and "lines are busy" in reply.text
            assert app.switchboard.book.held == 0

            cpu.share = 0.1
            await _health_when(http, "ok")
            reply = await http.post("/answer", data={"CallUUID": "c2", "From": "+1", "To": "+2"})
            assert "<Stream" in reply.text
            assert gauge.window.starting() == 1
        shutdown.set()


async def _health_when(http: httpx.AsyncClient, status: str) -> httpx.Response:
    """``/health`` once it reports ``status`` (the gauge needs a window of samples)."""
    with trio.fail_after(10):
        while True:
            reply = await http.get("/health")
            if reply.json()["status"] == status:
                return reply
            await trio.sleep(0.05)
