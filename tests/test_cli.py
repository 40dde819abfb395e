"""scripts/run_tails.py: the documented flags, and bad input refused clearly with exit code 2."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN_TAILS = ROOT / "scripts" / "run_tails.py"
NAME = "ztf_20191014495961_000570_zr_c05_o_q3"


def run_tails(*args, cwd=None):
    return subprocess.run(
        [sys.executable, str(RUN_TAILS), *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--single_image=ztf_2019_bad"], "bad ZTF frame name 'ztf_2019_bad'.*expected ztf_YYYYMMDDffffff_FFFFFF_zX_cCC_o_qQ"),
        ([f"--single_image={NAME[:-1]}7"], r"quadrant 7 is not in 1\.\.4"),
        ([f"--single_image={NAME}", "--score_threshold=1.5"], r"score_threshold must be in \[0, 1\]"),
        ([f"--single_image={NAME}", "--cleanup=everything"], "cleanup must be one of none, ref, sci, all"),
        ([f"--single_image={NAME}", "--config=/nonexistent/config.yaml"], "does not exist"),
        ([f"--single_image={NAME}", "--nthreads=0"], "nthreads must be a positive integer"),
        ([], "give exactly one of --single_image=NAME or --date=YYYYMMDD"),
        (["--date=2020-10-15"], "--date must be a UTC date YYYYMMDD"),
        ([f"--single_imag={NAME}"], "run_tails.py has no flag --single_imag; its flags are --config, "),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(tmp_path, args, message):
    r = run_tails(*args, f"--output_base_path={tmp_path}")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    import re

    assert re.search(message, r.stderr), r.stderr
    assert not any(tmp_path.iterdir())  # nothing written


def test_config_with_unknown_key_is_named(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text((ROOT / "config.defaults.yaml").read_text() + "\nextra_section: 1\n")
    r = run_tails(f"--config={cfg}", f"--single_image={NAME}", f"--output_base_path={tmp_path / 'out'}")
    assert r.returncode == 2 and "'extra_section' is unknown" in r.stderr


def test_a_bad_vet_section_is_refused_before_any_download(tmp_path):
    text = (ROOT / "config.defaults.yaml").read_text().replace("    min_fraction: 0.1\n", "    min_fraction: lots\n")
    assert "min_fraction: lots" in text
    cfg = tmp_path / "config.yaml"
    cfg.write_text(text)
    out = tmp_path / "out"
    r = run_tails(f"--config={cfg}", f"--single_image={NAME}", f"--output_base_path={out}")
    assert r.returncode == 2 and "tails.vet.min_fraction must be a number, not 'lots'" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


def test_help_lists_the_flags():
    r = run_tails("--help")
    text = r.stdout + r.stderr
    for flag in ("config", "checkpoint", "score_threshold", "cleanup", "single_image", "date", "twilight",
                 "nthreads", "output_base_path"):
        assert flag in text


@pytest.mark.parametrize(
    "command", ["train", "reproduce", "evaluate", "pool", "simulate", "benchmark", "fetch-models"]
)
def test_a_mistyped_flag_of_a_tails_command_is_refused_before_it_runs(command, tmp_path, monkeypatch, capsys):
    # fire would call the command with its defaults and apply the flag to the result: a
    # mistyped flag of `tails train` started a default training run
    from tails.cli import main

    monkeypatch.chdir(tmp_path)
    assert main([command, "--no_such_flag=1"]) == 2
    assert f"tails {command} has no flag --no_such_flag; its flags are --" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("flag, message", [
    ("--repeats=-1", "repeats must be a whole number of timed runs, 0 or more, got -1"),
    ("--nthreads=0", "nthreads must be an integer of at least 1, got 0"),
])
def test_tails_benchmark_refuses_a_bad_count_before_it_runs(flag, message, tmp_path, monkeypatch, capsys):
    from tails.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["benchmark", flag]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_tails_train_help_shows_its_own_flags(capsys):
    from tails.cli import main

    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().err  # fire writes its help to stderr
    assert "tails train" in text and "--max_epochs" in text and "--overwrite" in text
