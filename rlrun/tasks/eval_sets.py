"""The evaluation sets by name, shared by ``rlrun-eval`` and the in-loop evaluation
(``eval.benchmarks``): ``arith``, the built-in task's held-out split, and the vendored benchmarks
(``rlrun/tasks/benchmarks``), each with the verifier that checks it."""
from __future__ import annotations


def benchmark_names() -> list[str]:
    """Every name ``benchmark`` accepts: ``arith`` and the vendored data sets (``builtin:<name>``)."""
    from rlrun.tasks.jsonl_data import builtin_names

    return ["arith", *builtin_names()]


def check_benchmark(name: str, where: str = "") -> None:
    """ValueError (one line: ``where`` (where the name was given, e.g. ``"--data "``), the name, a
    close match and the valid names) unless ``name`` is a benchmark."""
    from rlrun.wiring.config_check import suggest

    valid = benchmark_names()
    if name not in valid:
        raise ValueError(f"{where}{name} is not a benchmark{suggest(name, valid)}; valid: {', '.join(valid)}")


def benchmark(name: str, n: int, seed: int, timeout_s: float = 5.0, prompt: str | None = None,
              verifiers: dict | None = None):
    """``(problems, verifier)`` of one benchmark, shared by ``rlrun-eval`` and the in-loop evaluation
    (``eval.benchmarks``): ``arith``, the built-in task's held-out split (``n`` problems of seed
    ``seed``) checked by the boxed-integer verifier, or a vendored data set (``builtin:<name>``, its
    first ``n`` rows in file order, shown with ``prompt``, by default the data sets' usual one)
    checked by math-verify with ``timeout_s`` seconds per answer. ``verifiers`` (a dict the caller
    keeps) lets benchmarks of one kind share a verifier, so math-verify's worker processes start once.
    """
    check_benchmark(name)
    verifiers = {} if verifiers is None else verifiers
    if name == "arith":
        from rlrun.tasks.arith import ArithProblems
        from rlrun.tasks.verify import BoxedAnswerVerifier

        return ArithProblems(seed=seed).held_out(n), verifiers.setdefault("boxed", BoxedAnswerVerifier())
    from rlrun.tasks.jsonl_data import DEFAULT_PROMPT, DatasetProblems
    from rlrun.tasks.math_verifier import MathVerifier

    source = DatasetProblems(path=f"builtin:{name}", seed=seed, prompt=prompt or DEFAULT_PROMPT)
    if "math" not in verifiers:
        verifiers["math"] = MathVerifier(timeout_s=timeout_s)
    return source.held_out(n), verifiers["math"]
