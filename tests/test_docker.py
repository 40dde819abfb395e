"""Dockerfile and docker-compose.yaml, checked by reading them (Docker does not run here)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path, PurePosixPath

import pytest
import yaml

from tails.config import load_config

ROOT = Path(__file__).resolve().parents[1]
APP = PurePosixPath("/app")
INSTRUCTIONS = {"FROM", "RUN", "ENV", "WORKDIR", "COPY", "ADD", "CMD", "ENTRYPOINT", "EXPOSE",
                "VOLUME", "ARG", "LABEL", "USER", "HEALTHCHECK", "SHELL", "STOPSIGNAL", "ONBUILD"}


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def test_dockerfile_instructions_and_sources():
    steps = _dockerfile()
    assert steps[0][0] == "FROM" and "python:3.11" in steps[0][1]
    assert all(word in INSTRUCTIONS for word, _ in steps), [w for w, _ in steps if w not in INSTRUCTIONS]
    workdirs = [a for w, a in steps if w == "WORKDIR"]
    assert workdirs == [str(APP)]
    for word, args in steps:
        if word == "COPY":
            *sources, _dest = shlex.split(args)
            for src in sources:
                assert (ROOT / src).exists(), f"COPY source {src} is not in the repository"
                assert src != "config.yaml", "the user's config (tokens) must not be baked into the image"
    runs = " ".join(a for w, a in steps if w == "RUN")
    assert "swarp" in runs and "pip install" in runs
    copied = {shlex.split(a)[0] for w, a in steps if w == "COPY"}
    assert {"tails", "sentinel", "sentinel.py", "models", "tests"} <= copied


def test_dockerfile_command_runs_the_sentinel_under_supervisord():
    cmd = [yaml.safe_load(a) for w, a in _dockerfile() if w == "CMD"]
    assert len(cmd) == 1
    argv = cmd[0]
    assert argv[:3] == ["python", "sentinel.py", "run"]
    config = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    assert config == [str(APP / "config.yaml")]


def test_compose_services_volumes_and_config(compose):
    config = load_config()
    services = compose["services"]
    assert set(services) == {"sentinel", "mongo"}
    s = services["sentinel"]
    assert s["build"]["context"] == "."
    assert (ROOT / s["build"]["dockerfile"]).is_file()
    # every named volume used is declared, and every declared one is used
    used = set()
    for svc in services.values():
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if not src.startswith((".", "/")):
                used.add(src)
    assert used == set(compose["volumes"])
    # the mounted config is the one the container's command reads
    mounts = {v.split(":")[1]: v.split(":")[0] for v in s["volumes"]}
    assert mounts[str(APP / "config.yaml")] == "./config.yaml"
    # the data volume sits where the default sentinel.app.path_base resolves inside the container
    path_base = APP / PurePosixPath(config["sentinel"]["app"]["path_base"])
    assert str(PurePosixPath(*[p for p in path_base.parts if p != "."])) in mounts
    # MongoDB only on request, reachable under the configured host name and port
    m = services["mongo"]
    assert m["profiles"] == ["mongo"]
    assert config["sentinel"]["ledger"]["mongo_host"] == "mongo"
    assert str(config["sentinel"]["ledger"]["mongo_port"]) in [str(p) for p in m["expose"]]
    assert s["depends_on"]["mongo"]["required"] is False
    nets = set(compose["networks"])
    assert all(set(svc["networks"]) <= nets for svc in services.values())


def test_sentinel_cli_uses_this_compose_file():
    text = (ROOT / "sentinel.py").read_text()
    assert "docker-compose.yaml" in text and '"--profile", "mongo"' in text
