"""Answer checking for free-form math answers (MATH, GSM8K, DeepScaleR, ...) with math-verify.

``predicted`` is the content of a completion's last complete ``\\boxed{...}`` (``extract_boxed``),
``format_ok`` is 1 when there is one, and ``correct`` is ``math_verify.verify(parse(gold),
parse(predicted))`` with both answers given as LaTeX inside ``$...$`` (a gold answer written as
``\\boxed{...}`` or ``$...$`` is unwrapped first; math-verify 0.9 reads ``$10\\%$`` but not
``\\boxed{10\\%}``). As math-verify decides: ``10\\%`` equals ``10``, not ``0.1`` (the percent sign
is dropped); ``2\\text{ cm}`` equals ``2`` (units are dropped); ``\\text{(A)}`` equals ``A``.
Fast path, no worker: the same text up to whitespace is correct, two plain integers are compared as
integers, an empty box is wrong.

math-verify's own timeouts use ``signal.alarm``, which works only on the main thread (DESIGN.md
section 7). They are switched off here and every check runs in a ``spawn`` worker process instead
(safe beside torch's threads), so the verifier works from any thread. A worker gets its share of a
call as one batch and answers item by item; an item may take ``timeout_s`` from the moment its worker
is free for it (start-up not counted), after which the worker is terminated, the item is a
``"timeout"`` and a fresh worker takes the rest. An exception in a check (also a gold answer
math-verify cannot read at all) is an ``"error"``. Both score 0 but are logged and counted:
``metrics()`` gives ``verify/errors``, ``verify/timeouts`` and ``verify/checked`` (completions with an
answer) since the previous ``metrics()`` call; ``last_status`` holds ``"ok" | "error" | "timeout" |
"no_answer"`` per completion of the last call.
"""
from __future__ import annotations

import logging
import multiprocessing
import re
import signal
import threading
import time
import weakref
from multiprocessing.connection import wait
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlrun.types import StepBatch, Verdicts

log = logging.getLogger(__name__)
STARTUP_S = 120.0  # how long a new worker may take to import math-verify and say "ready"
_INTEGER = re.compile(r"[+-]?(\d{1,30}|\d{1,3}(,\d{3}){1,9})")
_SPACE = re.compile(r"\s+")


def math_verify_equal(gold: str, predicted: str) -> bool:
    """``verify(parse(gold), parse(predicted))`` with math-verify's alarm-based timeouts off and its
    errors raised. A gold answer that parses to nothing raises: the checker failed, not the model."""
    from math_verify import parse, verify

    gold_parsed = parse(gold, parsing_timeout=None, raise_on_error=True)
    if not gold_parsed:
        raise ValueError(f"math-verify cannot read the gold answer {gold[:100]!r}")
    predicted_parsed = parse(predicted, parsing_timeout=None, raise_on_error=True)
    return bool(verify(gold_parsed, predicted_parsed, timeout_seconds=None, raise_on_error=True))


def _serve(conn) -> None:
    """Worker process: warm math-verify up, say "ready", then answer each batch of
    ``(index, gold, predicted)`` with one ``(index, status, value)`` message per item."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its "timeout is disabled" warning
    math_verify_equal("$1$", "$1$")  # imports sympy before any item's clock starts
    try:
        conn.send("ready")
        while True:
            for index, gold, predicted in conn.recv():
                try:
                    reply = (index, "ok", math_verify_equal(gold, predicted))
                except Exception as error:  # noqa: BLE001 - every failure is reported, none hidden
                    reply = (index, "error", f"{type(error).__name__}: {error}"[:300])
                conn.send(reply)
    except (EOFError, OSError):  # the parent closed the pipe: stop quietly
        return


def _unwrap(answer: str) -> str:
    """``" $x$ "`` -> ``"x"``: the answer without surrounding spaces and dollars."""
    body = answer.strip()
    while len(body) > 1 and body.startswith("$") and body.endswith("$"):
        body = body[1:-1].strip()
    return body


def fast_verdict(gold: str, predicted: str) -> bool | None:
    """The verdict when it needs no math-verify: same text up to whitespace -> True, two integers ->
    compared as integers, an empty answer -> False; None otherwise."""
    gold_text, predicted_text = _SPACE.sub("", gold), _SPACE.sub("", predicted)
    if not predicted_text:
        return False
    if gold_text == predicted_text:
        return True
    if _INTEGER.fullmatch(gold_text) and _INTEGER.fullmatch(predicted_text):
        return int(gold_text.replace(",", "")) == int(predicted_text.replace(",", ""))
    return None


class _Worker:
    """One checking process and its pipe: started on first use, replaced after a timeout."""

    def __init__(self, context) -> None:
        self.context, self.process, self.conn, self.ready = context, None, None, False

    def start(self) -> None:
        self.conn, child = self.context.Pipe()
        self.process = self.context.Process(target=_serve, args=(child,), daemon=True, name="math-verify")
        self.process.start()
        child.close()  # the worker holds the only other end: its death reads as EOF here
        self.ready = False

    def stop(self) -> None:
        if self.process is None:
            return
        self.conn.close()
        self.process.terminate()
        self.process.join(2.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.process = self.conn = None


def _stop_all(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.stop()


class MathVerifier:
    """``StepBatch -> Verdicts`` with math-verify, a per-item timeout that works in any thread, and
    counted failures (module docstring). Workers start lazily and are reused across calls; ``close()``
    stops them (they are also stopped when the object is collected or the interpreter exits)."""

    def __init__(self, timeout_s: float = 5.0, workers: int = 2) -> None:
        self.timeout_s, self.workers = float(timeout_s), int(workers)
        self.last_status: list[str] = []
        self._counts = {"errors": 0, "timeouts": 0, "checked": 0}
        self._lock = threading.Lock()
        context = multiprocessing.get_context("spawn")
        self._workers = [_Worker(context) for _ in range(max(1, self.workers))]
        weakref.finalize(self, _stop_all, self._workers)

    def __call__(self, rollouts: StepBatch) -> Verdicts:
        import torch  # torch-importing modules stay out of the workers, which import this module

        from rlrun.tasks.verify import extract_boxed
        from rlrun.types import Verdicts

        predicted = [extract_boxed(text) for text in rollouts.texts]
        status = ["no_answer" if p is None else "ok" for p in predicted]
        correct = [0.0] * len(predicted)
        pending = []  # (index, gold, predicted) as LaTeX for the workers
        for index, (answer, box) in enumerate(zip(rollouts.answers_N, predicted)):
            if box is None:
                continue
            gold, guess = _unwrap(extract_boxed(answer) or answer), _unwrap(box)
            verdict = fast_verdict(gold, guess)
            if verdict is None:
                pending.append((index, f"${gold}$", f"${guess}$"))
            else:
                correct[index] = float(verdict)
        with self._lock:
            for index, (state, value) in self._check(pending).items():
                status[index], correct[index] = state, float(state == "ok" and bool(value))
            self._counts["checked"] += sum(p is not None for p in predicted)
            self._counts["errors"] += status.count("error")
            self._counts["timeouts"] += status.count("timeout")
            self.last_status = status
        return Verdicts(
            correct_N=torch.tensor(correct, dtype=torch.float32),
            format_ok_N=torch.tensor([float(p is not None) for p in predicted], dtype=torch.float32),
            predicted=predicted,
        )

    def metrics(self) -> dict[str, float]:
        """Failure counts and judged answers since the previous ``metrics()`` call (then reset)."""
        with self._lock:
            counts, self._counts = self._counts, {"errors": 0, "timeouts": 0, "checked": 0}
        return {f"verify/{name}": float(value) for name, value in counts.items()}

    def close(self) -> None:
        """Stop the workers; a later call starts new ones."""
        with self._lock:
            _stop_all(self._workers)

    def _check(self, pending: list[tuple[int, str, str]]) -> dict[int, tuple[str, object]]:
        """Run ``pending`` on the workers (round-robin shares); ``{index: (status, value)}``."""
        results: dict[int, tuple[str, object]] = {}
        active: dict[_Worker, list] = {}  # worker -> [items not answered yet, deadline]
        shares = min(len(self._workers), len(pending))
        for k in range(shares):
            self._send(self._workers[k], pending[k::shares], active)
        while active:
            by_conn = {worker.conn: worker for worker in active}
            soonest = min(deadline for _, deadline in active.values())
            for conn in wait(list(by_conn), max(0.0, soonest - time.monotonic())):
                self._receive(by_conn[conn], active, results)
            now = time.monotonic()
            for worker in [w for w, (_, deadline) in active.items() if deadline <= now]:
                self._overdue(worker, active, results)
        return results

    def _send(self, worker: _Worker, items: list, active: dict) -> None:
        active.pop(worker, None)
        if not items:
            return
        if worker.process is None or not worker.process.is_alive():
            worker.stop()
            worker.start()
        worker.conn.send(items)
        limit = self.timeout_s if worker.ready else STARTUP_S
        active[worker] = [list(items), time.monotonic() + limit]

    def _receive(self, worker: _Worker, active: dict, results: dict) -> None:
        items = active[worker][0]
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):  # the process died during the item
            return self._replace(worker, "error", "the worker process died", active, results)
        if message == "ready":
            worker.ready = True
        else:
            _, state, value = message  # replies come in the order the items were sent
            _record(items.pop(0), state, value, results)
            if not items:
                del active[worker]
                return
        active[worker][1] = time.monotonic() + self.timeout_s

    def _overdue(self, worker: _Worker, active: dict, results: dict) -> None:
        if worker.ready:
            return self._replace(worker, "timeout", f"over {self.timeout_s:g} s", active, results)
        for item in active.pop(worker)[0]:  # it never started: nothing of its share was checked
            _record(item, "error", f"no worker started within {STARTUP_S:.0f} s", results)
        worker.stop()

    def _replace(self, worker: _Worker, state: str, reason: str, active: dict, results: dict) -> None:
        """Score the worker's current item as ``state``, replace the worker, resend the rest."""
        items = active[worker][0]
        _record(items[0], state, reason, results)
        worker.stop()
        self._send(worker, items[1:], active)


def _record(item: tuple[int, str, str], state: str, value: object, results: dict) -> None:
    """``results[index] = (state, value)``; a failure is logged and scores False."""
    index, gold, predicted = item
    if state != "ok":
        log.warning("math-verify %s (%s): gold %.100r, predicted %.100r", state, value, gold, predicted)
        value = False
    results[index] = (state, value)
