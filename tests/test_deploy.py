"""The Dockerfile, compose.yaml and the Kubernetes manifests against the server they run.

No image is built and no cluster is reached here: what is checked is what drifts apart
silently. The files parse; they name the port and the paths the server serves; every
grace period outlasts the drain it must cover; the image's Python can install every
locked package from a wheel; its health check, run for real, says what ``/health`` says.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import tomllib
from pathlib import Path

import pytest
import trio
import yaml
from serving import running_server
from stand_ins import quiet

from adapters.app.server import create_app
from adapters.app.serving import FINAL_HANGUP_WAIT, _hypercorn_config
from adapters.app.settings import ServerSettings
from adapters.ops import metrics
from engine.config import AgentConfig

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"

#: What the server does after the drain, at most (adapters/app/serving.py): the calls left
#: get 3 s to end, Vobiz's last hang-ups FINAL_HANGUP_WAIT, hypercorn its graceful timeout to
#: close connections, the providers and the REST client 2 s each to close.
AFTER_DRAIN = 3 + FINAL_HANGUP_WAIT + _hypercorn_config("127.0.0.1", 0).graceful_timeout + 2 + 2
DEFAULTS = ServerSettings()


# -- the Dockerfile --------------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order, continuation lines joined, comments left out."""
    joined: list[str] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    assert not pending, "a continued line never ends"
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined]


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def env_of(steps: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for op, args in steps:
        if op == "ENV":
            env |= dict(part.split("=", 1) for part in shlex.split(args))
    return env


def image_python() -> str:
    """The Python version of the base image, from its ``ARG`` (``3.11``)."""
    (arg,) = [a for op, a in instructions() if op == "ARG" and a.startswith("PYTHON_IMAGE=")]
    image = arg.split("=", 1)[1]
    assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", image), image
    return image.split(":")[1].split("-")[0]


def test_the_image_is_slim_locked_and_runs_the_server_as_a_user_on_its_port():
    steps = instructions()
    final = final_stage()
    assert [a for op, a in steps if op == "FROM"] == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    image_python()
    # The dependencies are a layer of their own, made from the lockfile alone, before any source.
    runs = [(i, a) for i, (op, a) in enumerate(steps) if op == "RUN" and "uv sync" in a]
    assert [a.split("uv sync", 1)[1].strip() for _, a in runs] == [
        "--frozen --no-dev --no-install-project",
        "--frozen --no-dev --no-editable",
    ]
    copies = [(i, a) for i, (op, a) in enumerate(steps) if op == "COPY"]
    first_source = min(i for i, a in copies if a.split()[-1].startswith("./engine"))
    assert runs[0][0] < first_source < runs[1][0]
    assert ("COPY", "pyproject.toml uv.lock ./") in steps[: runs[0][0]]
    for _, args in copies:
        if not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), source
    # Not root, on the server's port, stopped with the signal the server drains on.
    (user,) = [a for op, a in final if op == "USER"]
    assert user not in ("root", "0")
    assert f"--uid 10001 --create-home --home-dir /home/{user} {user}" in dict(final)["RUN"]
    env = env_of(final)
    assert env["PORT"] == str(DEFAULTS.port) == dict(final)["EXPOSE"]
    assert env["HOST"] == "0.0.0.0"
    assert dict(final)["STOPSIGNAL"] == "SIGTERM"
    command = json.loads(dict(final)["CMD"])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert command == ["voice-agent", "serve"] and "voice-agent" in scripts
    assert ".env" in (ROOT / ".dockerignore").read_text().split()  # keys never in the image


def healthcheck() -> list[str]:
    (check,) = [a for op, a in final_stage() if op == "HEALTHCHECK"]
    return json.loads(check.split(" CMD ", 1)[1])


async def test_the_images_health_check_run_for_real_follows_health(tmp_path):
    command = healthcheck()
    assert command[0] == "python" and "/health" in command[-1]
    settings = ServerSettings(call_log_dir=tmp_path)
    async with running_server(settings, AgentConfig(), quiet()) as app:
        env = os.environ | {"PORT": app.base_url.rsplit(":", 1)[1]}
        run = [sys.executable, *command[1:]]
        ok = await trio.run_process(run, env=env, check=False, capture_stderr=True)
        app.switchboard.draining = True
        draining = await trio.run_process(run, env=env, check=False, capture_stderr=True)
    assert ok.returncode == 0
    assert draining.returncode != 0 and b"503" in draining.stderr


def wheel_installs_on(filename: str, python: str) -> bool:
    """Whether a wheel installs on CPython ``python`` (``3.11``) on x86-64 glibc Linux."""
    _, *tags = filename.removesuffix(".whl").rsplit("-", 3)
    interpreters, abis, platforms = (set(t.split(".")) for t in tags)
    minor = int(python.split(".")[1])
    cpython = {f"cp3{minor}", "py3", f"py3{minor}"}
    abi3 = any(re.fullmatch(r"cp3(\d+)", i) and int(i[3:]) <= minor for i in interpreters)
    python_ok = bool(interpreters & cpython) or ("abi3" in abis and abi3)
    abi_ok = bool(abis & {"none", "abi3", f"cp3{minor}"})
    platform_ok = "any" in platforms or any(
        p.startswith("manylinux") and p.endswith("_x86_64") for p in platforms
    )
    return python_ok and abi_ok and platform_ok


def test_every_locked_package_installs_from_a_wheel_on_the_images_python():
    """The slim image has no compiler: a package with no wheel for its Python fails the build
    (pocketsphinx has none for 3.12)."""
    python = image_python()
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    installable: dict[str, bool] = {}
    for package in lock["package"]:
        if "editable" in package["source"] or "virtual" in package["source"]:
            continue  # the project itself
        files = [w["url"].rsplit("/", 1)[1] for w in package.get("wheels", [])]
        fits = any(wheel_installs_on(f, python) for f in files)
        installable[package["name"]] = installable.get(package["name"], False) or fits
    assert [name for name, fits in installable.items() if not fits] == []
    assert not wheel_installs_on("pocketsphinx-5.1.1-cp313-cp313-manylinux_2_28_x86_64.whl", python)


# -- compose.yaml ----------------------------------------------------------------------------------


def test_compose_serves_the_port_and_stops_after_the_drain():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    agent = compose["services"]["voice-agent"]
    env = agent["environment"]
    assert agent["build"] == "."
    assert agent["ports"] == [f"{env['PORT']}:{env['PORT']}"]
    assert env["CALL_LOG_DIR"] in {v.split(":")[1] for v in agent["volumes"]}
    assert agent["env_file"] == [{"path": ".env", "required": False}]
    assert agent["stop_signal"] == "SIGTERM"
    grace = int(agent["stop_grace_period"].removesuffix("s"))
    assert grace > float(env["DRAIN_TIMEOUT"]) + AFTER_DRAIN
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())["scrape_configs"]
    (job,) = scrape
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": [f"voice-agent:{env['PORT']}"]}]


# -- Kubernetes ------------------------------------------------------------------------------------


def manifests() -> dict[str, dict]:
    """Every manifest the kustomization applies, by kind."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    found = {}
    for name in kustomization["resources"]:
        for document in yaml.safe_load_all((K8S / name).read_text()):
            found[document["kind"]] = document
    return found


def routes() -> set[str]:
    app = create_app(ServerSettings(), AgentConfig(), quiet())
    return {rule.rule for rule in app.url_map.iter_rules()} | {"/ws"}  # /ws is served from ASGI


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict]:
    return manifests()


def container(k8s) -> dict:
    (only,) = k8s["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


def test_the_deployment_serves_the_port_and_is_ready_from_health(k8s):
    pod = k8s["Deployment"]["spec"]["template"]
    agent = container(k8s)
    env = {e["name"]: e["value"] for e in agent["env"]}
    (port,) = agent["ports"]
    assert port["containerPort"] == int(env["PORT"]) == DEFAULTS.port
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == env["PORT"]
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    assert agent["readinessProbe"]["httpGet"] == {"path": "/health", "port": port["name"]}
    for probe in ("startupProbe", "livenessProbe"):  # paths that answer while draining too
        assert agent[probe]["httpGet"] == {"path": "/metrics", "port": port["name"]}
    assert {"/health", "/metrics"} <= routes()
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert k8s["Deployment"]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    service = k8s["Service"]["spec"]
    assert service["selector"] == k8s["Deployment"]["spec"]["selector"]["matchLabels"]
    assert [p["targetPort"] for p in service["ports"]] == [port["name"]]


def test_a_rollout_lets_every_call_finish(k8s):
    spec = k8s["Deployment"]["spec"]["template"]["spec"]
    agent = container(k8s)
    env = {e["name"]: e["value"] for e in agent["env"]}
    drain = float(env["DRAIN_TIMEOUT"])
    assert drain >= AgentConfig().max_call_seconds  # the longest call fits in the drain
    command = agent["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    assert spec["terminationGracePeriodSeconds"] > float(command[1]) + drain + AFTER_DRAIN


def test_the_autoscaler_reads_live_calls_from_metrics_or_cpu(k8s):
    hpa = k8s["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == k8s["Deployment"]["metadata"]["name"]
    by_type = {m["type"]: m for m in hpa["metrics"]}
    assert by_type["Resource"]["resource"]["name"] == "cpu"
    pods = by_type["Pods"]["pods"]
    served = metrics.exposition()[0].decode()
    assert f"\n{pods['metric']['name']} " in served
    env = {e["name"]: e["value"] for e in container(k8s)["env"]}
    assert 0 < float(pods["target"]["averageValue"]) < int(env["MAX_CALLS"])


def test_the_ingress_lets_vobiz_reach_its_routes_and_nothing_else(k8s):
    (rule,) = k8s["Ingress"]["spec"]["rules"]
    paths = rule["http"]["paths"]
    public = {p["path"] for p in paths}
    assert public == {"/answer", "/hangup", "/stream-status", "/transfer", "/ws"}
    assert public <= routes()
    service = k8s["Service"]["metadata"]["name"]
    port_names = {p["name"] for p in k8s["Service"]["spec"]["ports"]}
    for path in paths:
        assert path["backend"]["service"]["name"] == service
        assert path["backend"]["service"]["port"]["name"] in port_names


def test_several_pods_share_their_calls_and_a_calls_sockets_hash_to_one_pod(k8s):
    """More than one pod: calls in Redis (any pod may start or carry on one), retries on."""
    replicas = max(
        k8s["Deployment"]["spec"]["replicas"], k8s["HorizontalPodAutoscaler"]["spec"]["maxReplicas"]
    )
    env = {e["name"]: e["value"] for e in container(k8s)["env"]}
    assert replicas > 1
    assert env["LOG_STORE"].startswith("redis://")
    assert ServerSettings(log_store=env["LOG_STORE"]).log_store == env["LOG_STORE"]
    assert int(env["STREAM_RETRIES"]) > 0
    annotations = k8s["Ingress"]["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/upstream-hash-by"] == "$arg_token"
