"""scripts/run_tier.py, through which `make test` runs each tier: a tier that outlives its limit fails
naming the test it was running and leaves no process behind; a tier that collects no tests fails; a
tier that passes, or whose tests are all skipped, exits 0. Each case runs pytest on a tiny generated
test file (a few seconds in all)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

RUN_TIER = Path(__file__).resolve().parents[2] / "scripts" / "run_tier.py"

TESTS = '''
import subprocess
import time

import pytest


def test_quick():
    pass


def test_sleeps():
    # a process in a session of its own, as a launcher may start: it must not survive the tier
    child = subprocess.Popen(["sleep", "120"], start_new_session=True)
    with open("grandchild.pid", "w") as f:
        f.write(str(child.pid))
    time.sleep(120)


def test_sleeps_too():
    time.sleep(120)


@pytest.mark.skipif(True, reason="needs a CUDA GPU (make test-gpu)")
def test_skipped():
    pass


def test_venv_first():
    import os, shutil, sys
    here = os.path.dirname(sys.executable)
    assert os.environ["PATH"].split(os.pathsep)[0] == here, os.environ["PATH"]
    assert shutil.which("ninja") == os.path.join(here, "ninja")
'''


def run_tier(tmp_path: Path, limit: str, *pytest_args: str, deadline: float | None = None,
             path: str | None = None) -> tuple[int, str, float]:
    (tmp_path / "test_tiny.py").write_text(TESTS)
    env = {k: v for k, v in os.environ.items() if k != "RLRUN_TEST_DEADLINE"}
    if path is not None:
        env["PATH"] = path
    if deadline is not None:
        env["RLRUN_TEST_DEADLINE"] = str(deadline)
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(RUN_TIER), "demo", limit, "test_tiny.py", "-p", "no:cacheprovider", "-ra",
         *pytest_args],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env,
    )
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - began


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    except FileNotFoundError:
        return False


def test_a_tier_out_of_time_fails_naming_the_running_test_and_kills_its_processes(tmp_path):
    rc, out, seconds = run_tier(tmp_path, "3", "-k", "quick or sleeps")
    assert rc == 1, out
    assert out.strip().splitlines()[-1] == \
        "tier demo ran out of time after 3 s while running test_tiny.py::test_sleeps", out
    assert "1 passed" in out  # pytest was interrupted, so it printed its closing summary line
    assert seconds < 60, out  # stopped at the limit, not when the sleep ended
    pid = int((tmp_path / "grandchild.pid").read_text())
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        os.kill(pid, 9)
        raise AssertionError(f"the test's child process {pid} survived the tier")


def test_a_tier_that_passes_exits_0(tmp_path):
    rc, out, _ = run_tier(tmp_path, "60", "-k", "quick")
    assert rc == 0, out
    assert "1 passed" in out and "ran out of time" not in out


def test_a_tier_that_collects_no_tests_fails(tmp_path):
    rc, out, _ = run_tier(tmp_path, "60", "-k", "no_such_test")
    assert rc == 1, out
    assert "tier demo collected no tests (pytest exit 5)" in out


def test_a_tier_whose_tests_are_all_skipped_passes_and_says_why(tmp_path):
    rc, out, _ = run_tier(tmp_path, "60", "-k", "skipped")
    assert rc == 0, out
    assert "tier demo: all 1 collected tests were skipped: needs a CUDA GPU (make test-gpu)" in out


def test_the_tiers_processes_find_the_venvs_tools_first(tmp_path):
    """Called as `.venv/bin/python scripts/run_tier.py` (no venv activated, /usr/bin/ninja first on
    PATH), the tier's tests still find the venv's ninja first: DeepSpeed's CPU ops are built by one
    ninja, not rebuilt by turns (scripts/run_tier.py's venv_first)."""
    rc, out, _ = run_tier(tmp_path, "60", "-k", "venv_first", path="/usr/bin:/bin")
    assert rc == 0, out
    assert "1 passed" in out


def test_under_xdist_the_line_names_every_running_test(tmp_path):
    """`make test` runs the tiers with two pytest-xdist workers: both tests running at the limit
    are named."""
    rc, out, seconds = run_tier(tmp_path, "8", "-n", "2", "-k", "sleeps")
    assert rc == 1, out
    last = out.strip().splitlines()[-1]
    assert last.startswith("tier demo ran out of time after 8 s while running test_tiny.py::"), out
    named = last.split(" while running ")[1].split(" and ")
    assert sorted(named) == ["test_tiny.py::test_sleeps", "test_tiny.py::test_sleeps_too"], out
    assert seconds < 60, out


def test_make_tests_deadline_cuts_a_tier_short_and_a_spent_one_starts_nothing(tmp_path):
    rc, out, seconds = run_tier(tmp_path, "60", "-k", "quick or sleeps", deadline=time.time() + 4)
    last = out.strip().splitlines()[-1]
    assert rc == 1 and seconds < 40, out  # the 60 s limit gave way to the 4 s left
    assert last.startswith("tier demo ran out of time of make test's time budget (TEST_BUDGET_S) after "), out
    assert last.endswith(" s while running test_tiny.py::test_sleeps"), out
    rc, out, _ = run_tier(tmp_path, "60", "-k", "quick", deadline=time.time() - 1)
    assert rc == 1 and out.strip().splitlines() == [
        "tier demo did not start: make test's time budget (TEST_BUDGET_S) is spent"], out
    rc, out, _ = run_tier(tmp_path, "60", "-k", "quick", deadline=time.time() + 3600)
    assert rc == 0, out  # time enough: the tier's own limit stands
