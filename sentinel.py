#!/usr/bin/env python
"""Manage the Tails sentinel service.

    python sentinel.py build                 build the Docker image (docker compose build)
    python sentinel.py up [--build]          start it with Docker Compose (add --mongo for MongoDB)
    python sentinel.py up --native           start it here under supervisord (no Docker needed)
    python sentinel.py down [--native]       stop it
    python sentinel.py status [--native]     what runs
    python sentinel.py run                   supervisord in the foreground (the container's command)
    python sentinel.py fetch-models [NAMES]  download and verify models into models/
    python sentinel.py test [--native]       run the sentinel's tests (in the container, or here)
    python sentinel.py supervisord-conf      write supervisord.conf and print its path

Every command takes ``--config=config.yaml`` (the default).  The config is checked against
config.defaults.yaml first (a missing or unknown key is named), and the system dependencies of
the chosen mode are checked (Docker >= 20.10 with the compose plugin; or supervisord).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

#: Minimum versions: (command, how to read the version, minimum).
DOCKER_DEPS: dict[str, tuple[list[str], str]] = {
    "docker": (["docker", "--version"], "20.10"),
    "docker compose": (["docker", "compose", "version"], "2.0"),
}


class SentinelCliError(RuntimeError):
    """A check failed; the message says what to do."""


def _version(text: str) -> tuple[int, ...]:
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if m is None:
        raise ValueError(f"no version number in {text!r}")
    return tuple(int(g) for g in m.groups() if g is not None)


def check_dependencies(native: bool) -> list[str]:
    """Problems with the system dependencies of a mode (empty when all is well)."""
    problems = []
    if sys.version_info < (3, 11):
        problems.append(f"python >= 3.11 is needed, this is {sys.version.split()[0]}")
    if native:
        try:
            import supervisor  # noqa: F401
        except ImportError:
            problems.append("supervisor is not installed: pip install supervisor (or pip install -e .)")
        if not (shutil.which("SWarp") or shutil.which("swarp")):
            print("[!] SWarp is not installed: Tails falls back to the slower 'reproject' (apt-get install swarp)")
        return problems
    for dep, (cmd, minimum) in DOCKER_DEPS.items():
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            if out.returncode != 0:
                raise OSError(out.stderr.strip() or f"exit code {out.returncode}")
            found = _version(out.stdout)
        except (OSError, ValueError, subprocess.TimeoutExpired) as e:
            problems.append(f"{dep} >= {minimum} is needed: `{' '.join(cmd)}` failed ({e}); "
                            "install Docker, or run natively with --native")
            continue
        if found < _version(minimum):
            problems.append(f"{dep} >= {minimum} is needed, found {'.'.join(map(str, found))}")
    return problems


def check_config(config: str | os.PathLike) -> dict:
    """Load ``config`` and check it against config.defaults.yaml."""
    from tails.config import ConfigError, load_config

    path = Path(config)
    if not path.is_absolute():
        path = Path.cwd() / path
    if not path.is_file():
        raise SentinelCliError(
            f"{path} does not exist: copy config.defaults.yaml to {path.name} and edit it "
            "(Kowalski and Fritz tokens, sentinel.app.post_to_fritz)"
        )
    try:
        return load_config(path)
    except ConfigError as e:
        raise SentinelCliError(f"{path}: {e}") from None


def _require(native: bool) -> None:
    problems = check_dependencies(native)
    if problems:
        raise SentinelCliError("unsatisfied system dependencies:\n  - " + "\n  - ".join(problems))


def _run(cmd: Sequence[str], check: bool = True) -> int:
    print("$", " ".join(map(str, cmd)))
    code = subprocess.run(list(map(str, cmd)), cwd=ROOT).returncode
    if check and code != 0:
        raise SentinelCliError(f"`{' '.join(map(str, cmd))}` failed with exit code {code}")
    return code


def _compose(*args: str, mongo: bool = False) -> list[str]:
    cmd = ["docker", "compose", "-f", str(ROOT / "docker-compose.yaml")]
    if mongo:
        cmd += ["--profile", "mongo"]
    return cmd + list(args)


def _supervisor(config_path: str, config: dict) -> tuple[Path, list[str]]:
    from sentinel.supervisor import write_supervisord_conf

    conf = write_supervisord_conf(config, config_path)
    return conf, [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf)]


class Sentinel:
    """The commands of ``sentinel.py``."""

    def __init__(self, config: str = "config.yaml"):
        self.config_path = config

    def build(self) -> None:
        """Build the sentinel's Docker image."""
        check_config(self.config_path)
        _require(native=False)
        _run(_compose("build"))

    def up(self, build: bool = False, native: bool = False, mongo: bool = False) -> None:
        """Start the sentinel: Docker Compose, or supervisord here with ``--native``."""
        config = check_config(self.config_path)
        _require(native)
        if native:
            conf, ctl = _supervisor(self.config_path, config)
            if subprocess.run(ctl + ["pid"], capture_output=True, text=True).returncode == 0:
                print(f"supervisord already runs with {conf}; restarting its programs")
                _run(ctl + ["update"])
                _run(ctl + ["restart", "all"])
                return
            _run([sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)])
            print(f"sentinel started under supervisord ({conf}); logs in {conf.parent.parent / 'logs'}")
            return
        if build:
            self.build()
        _run(_compose("up", "-d", mongo=mongo or config["sentinel"]["ledger"]["backend"] == "mongo"))

    def down(self, native: bool = False) -> None:
        """Stop the sentinel."""
        config = check_config(self.config_path)
        if native:
            _, ctl = _supervisor(self.config_path, config)
            _run(ctl + ["shutdown"], check=False)
            return
        _require(native=False)
        _run(_compose("down", mongo=True), check=False)

    def status(self, native: bool = False) -> None:
        """Show what runs."""
        config = check_config(self.config_path)
        if native:
            _, ctl = _supervisor(self.config_path, config)
            _run(ctl + ["status"], check=False)
        else:
            _run(_compose("ps"), check=False)

    def run(self) -> None:
        """supervisord in the foreground (the container's command; Ctrl-C stops everything)."""
        from sentinel.supervisor import write_supervisord_conf

        config = check_config(self.config_path)
        _require(native=True)
        conf = write_supervisord_conf(config, self.config_path)
        os.execv(sys.executable, [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(conf)])

    def supervisord_conf(self) -> str:
        """Write supervisord.conf from ``sentinel.supervisord`` and return its path."""
        from sentinel.supervisor import write_supervisord_conf

        return str(write_supervisord_conf(check_config(self.config_path), self.config_path))

    def fetch_models(self, names: str | None = None, url: str | None = None) -> None:
        """Download models from ``models.url`` (or ``--url``), verify them, skip those present."""
        from tails.models import fetch_models

        check_config(self.config_path)
        try:
            lines = fetch_models(names, config=self.config_path, url=url)
        except Exception as e:  # ModelFetchError, requests errors: one line, exit code 2
            raise SentinelCliError(f"fetch-models failed: {e}") from None
        for line in lines:
            print(line)
        if not lines:
            print("no model named and none present in models/: pass NAMES, e.g. tails-20261124")

    def test(self, native: bool = False) -> None:
        """Run the sentinel's tests: in the running container, or here with ``--native``."""
        tests = ["tests/test_sentinel.py", "tests/test_ledger.py", "tests/test_fritz.py",
                 "tests/test_crossmatch.py", "tests/test_kowalski.py", "tests/test_docker.py"]
        if native:
            _run([sys.executable, "-m", "pytest", "-q", *tests])
        else:
            _require(native=False)
            _run(_compose("exec", "sentinel", "python", "-m", "pytest", "-q", *tests))


def main(argv: list[str] | None = None) -> int:
    import fire

    from tails.cli import UsageError, refuse_unknown_flags

    argv = list(sys.argv[1:] if argv is None else argv)
    # python-fire maps `fetch-models` to fetch_models itself; accept the original's spelling too
    argv = [a.replace("supervisord-conf", "supervisord_conf") for a in argv]
    try:
        command = getattr(Sentinel, argv[0].replace("-", "_"), None) if argv else None
        if callable(command):
            # fire would run the command, then complain about a mistyped flag
            refuse_unknown_flags(argv[1:], f"sentinel.py {argv[0]}", Sentinel.__init__, command)
        fire.Fire(Sentinel, command=argv, name="sentinel.py")
    except (UsageError, SentinelCliError) as e:
        print(f"[✗] {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
