#!/usr/bin/env python3
"""Run one tier of the test suite under a time limit: ``run_tier.py NAME LIMIT_S [pytest args...]``.

`make test-fast`, `make test-slow` and `make test-gpu` run pytest through this script, so that a
tier either finishes or fails:

* pytest runs in its own session (process group) with a plugin (:class:`CurrentTest`) that keeps a
  file saying what the session is doing: collecting, running a node id (each running one, under
  pytest-xdist's workers), between tests.
* A tier still running after LIMIT_S seconds is interrupted (SIGINT to pytest: it shows where the
  test stopped and prints its closing summary line), then every process it started is killed, those
  that left its process group (``setsid``) included, and the tier fails (exit 1) with one line::

      tier slow ran out of time after 840 s while running tests/e2e/test_x.py::test_y

* Under `make test` the whole suite has a deadline (``RLRUN_TEST_DEADLINE``, a Unix time: the
  start plus ``TEST_BUDGET_S``): a tier gets at most the time left to it, and fails the same way
  when that runs out (``tier vllm ran out of time of make test's time budget (TEST_BUDGET_S) after
  212 s while ...``); a tier that would start after it fails at once.
* The tier's processes find the venv's bin dir first on PATH (:func:`venv_first`), as in an
  activated venv: the same ``ninja`` builds DeepSpeed's CPU ops in every one of them.
* A tier that collects no tests (pytest exit 5) fails (exit 1): a selection that runs nothing
  passes nothing.
* A tier whose every test is skipped passes, and says so with the reasons (``make test-gpu`` without
  a CUDA GPU: ``tier gpu: all 5 collected tests were skipped: needs a CUDA GPU (make test-gpu)``).

Otherwise the exit status is pytest's; Ctrl-C or SIGTERM stops the tier the same way as the limit
(exit 130 or 143). pytest-timeout is not used: its per-test timeout needs a value per test, and its
session timeout is only checked between tests, so a test that hangs is never stopped.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time

GRACE_S = 15.0  # after SIGINT, how long pytest may take to stop before everything is killed
PR_SET_CHILD_SUBREAPER = 36  # Linux prctl: orphans of our descendants are re-parented to us


class CurrentTest:
    """pytest plugin: keeps ``path`` holding what the session is doing now, as the words that follow
    "while" in the out-of-time line; and says when every collected test was skipped."""

    def __init__(self, path: str, tier: str):
        self.path, self.tier = path, tier
        self.running: list[str] = []  # several at once under pytest-xdist (make test runs -n 2)

    def write(self, text: str) -> None:
        with open(self.path + ".tmp", "w") as f:
            f.write(text)
        os.replace(self.path + ".tmp", self.path)  # the reader never sees a half-written file

    def pytest_sessionstart(self, session) -> None:
        self.write("collecting tests")

    def pytest_runtest_logstart(self, nodeid, location) -> None:
        self.running.append(nodeid)
        self.write("running " + " and ".join(self.running))

    def pytest_runtest_logfinish(self, nodeid, location) -> None:
        if nodeid in self.running:
            self.running.remove(nodeid)
        self.write("running " + " and ".join(self.running) if self.running
                   else f"between tests (after {nodeid})")

    def pytest_sessionfinish(self, session, exitstatus) -> None:
        self.write("finishing the session (all tests done)")

    def pytest_terminal_summary(self, terminalreporter) -> None:
        stats = terminalreporter.stats
        skipped = stats.get("skipped", [])
        ran = sum(len(stats.get(key, [])) for key in ("passed", "failed", "error", "xfailed", "xpassed"))
        if skipped and not ran:
            reasons = sorted({str(r.longrepr[2]) if isinstance(r.longrepr, tuple) else str(r.longrepr)
                              for r in skipped})
            reasons = [r[len("Skipped: "):] if r.startswith("Skipped: ") else r for r in reasons]
            terminalreporter.write_line(
                f"tier {self.tier}: all {len(skipped)} collected tests were skipped: {'; '.join(reasons)}")


def child(state: str, tier: str, args: list[str]) -> int:
    """The pytest process: ``python -m pytest args`` with the plugin."""
    sys.path[0] = os.getcwd()  # as `python -m pytest` has it (not scripts/, where this file is)
    import pytest

    return int(pytest.main(args, plugins=[CurrentTest(state, tier)]))


def descendants(root: int) -> list[int]:
    """The pids of every living process below ``root`` (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])  # the name may hold spaces and parentheses
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            found.append(pid)
            todo.append(pid)
    return found


def kill_all(group: int) -> None:
    """SIGKILL the process group ``group`` and every descendant of this process, then reap them."""
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
    for _ in range(3):  # a process forking while we kill: look again
        pids = descendants(os.getpid())
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.1)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # reap the killed (they are our children, as subreaper)
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.05)


def venv_first() -> dict[str, str]:
    """This environment with the interpreter's bin dir first on PATH, as in an activated venv, so that
    every process of the tier runs the venv's own tools. It matters for ``ninja``: torch builds
    DeepSpeed's CPU ops (shm comm, CPU Adam) with the first ``ninja`` on PATH, and the venv's (1.13)
    and a system one (Debian's 1.11) each take the other's build log for stale: before this, tests
    that ran ``rlrun`` through the venv's bin dir and tests that ran ``python -m rlrun`` took turns
    rebuilding the shm op (~40 s each, every DeepSpeed start waiting on its lock), at least 6 times
    in one fast tier (the venv ninja's own log; the other's builds come on top), and one rebuild ran inside a test's 1 MiB file-size limit and failed that test."""
    bin_dir = os.path.dirname(sys.executable)  # not resolved: a venv's python is a link to the base one
    path = os.environ.get("PATH", "")
    return {**os.environ, "PATH": bin_dir + (os.pathsep + path if path else "")}


def main(argv: list[str]) -> int:
    if len(argv) >= 1 and argv[0] == "--child":
        return child(argv[1], argv[2], argv[3:])
    if len(argv) < 2:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    tier, limit_text, args = argv[0], argv[1], argv[2:]
    limit, cause = float(limit_text), f"after {limit_text} s"
    if os.environ.get("RLRUN_TEST_DEADLINE"):  # `make test` bounds the whole suite (TEST_BUDGET_S)
        left = float(os.environ["RLRUN_TEST_DEADLINE"]) - time.time()
        if left <= 0:
            print(f"tier {tier} did not start: make test's time budget (TEST_BUDGET_S) is spent", flush=True)
            return 1
        if left < limit:
            limit, cause = left, f"of make test's time budget (TEST_BUDGET_S) after {left:.0f} s"
    try:  # orphans of pytest's children (pytest stopped first) stay findable below us
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    stop: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, frame: stop.append(signum))
    with tempfile.TemporaryDirectory(prefix=f"rlrun-tier-{tier}-") as tmp:
        state = os.path.join(tmp, "current")
        with open(state, "w") as f:
            f.write("starting pytest")
        sys.stdout.flush()
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", state, tier, *args],
                                start_new_session=True, env=venv_first())
        deadline = time.monotonic() + limit
        rc = None
        while rc is None and not stop and time.monotonic() < deadline:
            try:
                rc = proc.wait(timeout=max(0.01, min(0.5, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                pass
        if rc is None:  # out of time, or stopped from outside: what was it doing?
            with open(state) as f:
                doing = f.read().strip()
            try:
                proc.send_signal(signal.SIGINT)  # pytest shows where it stopped and prints its summary
                proc.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                pass
            kill_all(proc.pid)
            proc.wait()
            sys.stdout.flush()
            if stop:
                print(f"tier {tier} stopped by signal {stop[0]} while {doing}", flush=True)
                return 128 + stop[0]
            print(f"tier {tier} ran out of time {cause} while {doing}", flush=True)
            return 1
    if rc == 5:
        print(f"tier {tier} collected no tests (pytest exit 5): a tier that runs nothing fails", flush=True)
        return 1
    if rc < 0:  # pytest killed by a signal
        print(f"tier {tier}: pytest was killed by signal {-rc}", flush=True)
        return 128 - rc
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
