"""One writer per output, and nothing left behind by a refusal (``adapt.locks``, ``adapt.outputs``).

The lock is held by real processes here: a helper process takes it and waits, and the command
lines are refused while it lives; a helper killed with SIGKILL leaves its lock file, which the
next command takes over with a note.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from adapt.errors import ConfigError
from adapt.locks import BusyError, acquire, lock_path
from adapt.outputs import claimed

HOLDER = textwrap.dedent("""
    import sys, time
    from adapt.locks import acquire
    acquire(sys.argv[1], "out")
    print("held", flush=True)
    time.sleep(900)  # killed by the test
""")


def hold(target: Path) -> subprocess.Popen:
    """A process that locks ``target`` and sleeps; returns once the lock is held."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(target)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


@pytest.fixture
def holder(tmp_path):
    process = hold(tmp_path / "run")
    yield process
    process.kill()
    process.wait()


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, holder):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "result.txt").write_text("the first command's")
    before = files_under(tmp_path)
    with pytest.raises(BusyError) as refused:
        acquire(tmp_path / "run", "out")
    message = str(refused.value)
    assert f"pid {holder.pid}" in message and "host " in message and "UTC" in message and "since" in message
    assert "out=" in message and "-c" in message  # the setting, and the holder's command line
    assert files_under(tmp_path) == before  # nothing of the first changed, its lock included


@pytest.mark.slow  # command lines in subprocesses
@pytest.mark.parametrize(
    "module, args, setting",
    [
        ("adapt.train", ["model=tiny", "hydra.run.dir={run}"], "hydra.run.dir"),
        ("adapt.train", ["model=tiny", "ckpt_path=last", "hydra.run.dir={run}"], "hydra.run.dir"),
        ("adapt.evaluate", ["adapter=none", "model=tiny", "out={run}"], "out"),
        ("adapt.export", ["adapter={run}", "out={run}"], "out"),
    ],
    ids=["train", "train resume", "evaluate", "export"],
)
def test_the_command_lines_refuse_a_locked_output_at_once(tmp_path, holder, module, args, setting):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"not read: the lock comes first")
    before = files_under(tmp_path)
    command = [sys.executable, "-m", module, *(a.format(run=run) for a in args)]
    result = subprocess.run(
        command,
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert f"{setting}={run}" in result.stderr and f"pid {holder.pid}" in result.stderr, result.stderr[-2000:]
    assert files_under(tmp_path) == before  # no .hydra/, no train.log, the first command's lock kept
    assert holder.poll() is None  # the holder was alive all along: the refusal above was the lock's


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_note(tmp_path, capsys):
    process = hold(tmp_path / "run")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert json.loads(lock_path(tmp_path / "run").read_text())["pid"] == process.pid  # left behind
    lock = acquire(tmp_path / "run", "hydra.run.dir")
    note = capsys.readouterr().err
    assert f"pid {process.pid}" in note and "taking the lock over" in note
    assert json.loads(lock_path(tmp_path / "run").read_text())["pid"] == os.getpid()
    lock.release()
    assert not lock_path(tmp_path / "run").exists()


@pytest.mark.parametrize("outcome", ["success", "refusal", "bug"])
def test_the_lock_is_released_however_the_block_ends(tmp_path, outcome):
    target = tmp_path / "out"
    errors = {"success": None, "refusal": ConfigError("refused"), "bug": RuntimeError("a bug")}
    try:
        with claimed(target, "out"):
            assert lock_path(target).exists()
            target.mkdir()
            (target / "part.txt").write_text("written")
            if errors[outcome]:
                raise errors[outcome]
    except (ConfigError, RuntimeError):
        pass
    assert not lock_path(target).exists()
    # A refusal removes the output it created; success and a bug (kept for its report) leave it.
    assert target.exists() == (outcome != "refusal")
    process = hold(target)  # and another process can take it at once
    process.kill()
    process.wait()


def test_a_refusal_keeps_what_existed_and_removes_only_new_parents(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "other").mkdir()
    with pytest.raises(ConfigError), claimed(tmp_path / "runs" / "a" / "b", "out"):
        (tmp_path / "runs" / "a" / "b").mkdir(parents=True)
        (tmp_path / "runs" / "a" / "sibling.txt").write_text("another command's")  # written beside ours
        raise ConfigError("refused")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["a", "other"]
    assert [p.name for p in (tmp_path / "runs" / "a").iterdir()] == ["sibling.txt"]


def test_a_refusal_puts_back_the_files_it_replaced_in_an_existing_folder(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- first\n")
    os.utime(run / ".hydra" / "overrides.yaml", ns=(1_000_000_000, 1_000_000_000))
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError), claimed(run, "hydra.run.dir", (".hydra/overrides.yaml", "train.log")):
        (run / ".hydra" / "overrides.yaml").write_text("- second\n")
        (run / "train.log").write_text("second run\n")
        raise ConfigError("refused")
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.rglob("*") if p.is_file()} == before


def test_secondary_ranks_do_not_lock(tmp_path, monkeypatch, holder):
    monkeypatch.setenv("LOCAL_RANK", "1")
    with claimed(tmp_path / "run", "hydra.run.dir") as claim:
        assert claim.lock is None


def test_an_output_the_lock_cannot_be_written_beside_is_a_user_error():
    with pytest.raises(ConfigError) as refused, claimed("/sys/sam2-adapt-outputs/out", "out"):
        pass
    assert "out=/sys/sam2-adapt-outputs/out: cannot write in /sys/sam2-adapt-outputs" in str(refused.value)
