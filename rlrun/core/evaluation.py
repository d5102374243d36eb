"""Evaluation metrics for accuracy-versus-length trade-offs (ALGORITHMS.md section 5).

- :func:`pass_at_k`, :func:`mean_pass_at_k`: the unbiased pass@k estimator of Chen et al. 2021.
- :func:`aes`, :func:`aes_deltas`: O1-Pruner's accuracy-efficiency score against a baseline.
- :func:`length_deviation`, :func:`relative_length_error`: how far lengths land from L1-style targets.
- :func:`pareto_frontier`: the runs that no other run beats on both accuracy and mean tokens.

Pure Python and torch; every result is a Python float (or a list of ints for the frontier).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n, of which c are
    correct, is correct: the unbiased pass@k estimator of Chen et al. 2021 ("Evaluating Large
    Language Models Trained on Code", arXiv 2107.03374, Sec. 2.1, Eq. 1):

        pass@k = 1 - C(n - c, k) / C(n, k)
               = 1 - prod_{i = n - c + 1}^{n} (1 - k / i)      (the paper's stable product form)

    and 1 when n - c < k (every k-subset holds a correct sample). The product never forms the large
    binomials. E.g. n=5, c=2: k=1 -> 1 - (3/4)(4/5) = 0.4; k=2 -> 1 - (2/4)(3/5) = 0.7. c=0 -> 0,
    c=n -> 1. Raises ValueError unless 0 <= c <= n and 1 <= k <= n.
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or int(value) != value:
            raise ValueError(f"pass_at_k needs integer counts, got {name}={value!r}")
    n, c, k = int(n), int(c), int(k)
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 1 <= k <= n (k samples out of n), got n={n}, k={k}")
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def mean_pass_at_k(correct_per_question: Sequence[Sequence[float]] | torch.Tensor, k: int) -> float:
    """pass@k averaged over questions: mean_q pass_at_k(n_q, c_q, k), where question q has n_q scored
    samples of which c_q are correct (Chen et al. 2021, Sec. 2.1). With k = 1 this is "pass@1
    averaged over n samples" (ALGORITHMS.md 5.1): the mean of c_q / n_q.

    ``correct_per_question``: one 0/1 (or bool) sequence per question, lengths may differ, or a
    (Q, n) tensor. E.g. [[1, 0, 1, 0, 0], [1, 1, 1, 1, 1]], k=2 -> (0.7 + 1) / 2 = 0.85.
    Raises ValueError for no question, a score other than 0/1, or a question with fewer than k samples.
    """
    rows = correct_per_question.tolist() if isinstance(correct_per_question, torch.Tensor) \
        else [list(row) for row in correct_per_question]
    if not rows:
        raise ValueError("mean_pass_at_k needs at least one question")
    total = 0.0
    for q, row in enumerate(rows):
        scores = [float(x) for x in row]
        if any(x not in (0.0, 1.0) for x in scores):
            raise ValueError(f"question {q}: scores must be 0/1, got {row}")
        total += pass_at_k(len(scores), int(sum(scores)), k)
    return total / len(rows)


AES_WEIGHTS = {"alpha": 1.0, "beta": 3.0, "gamma": 5.0}  # O1-Pruner's (arXiv 2501.12570, Sec. 5.1)


def aes_deltas(acc: float, tokens: float, base_acc: float, base_tokens: float) -> tuple[float, float]:
    """The relative changes of O1-Pruner's AES (Luo et al., arXiv 2501.12570, Sec. 5.1):

        dLength = (base_tokens - tokens) / base_tokens      (> 0: shorter than the baseline)
        dAcc    = (acc - base_acc) / base_acc               (> 0: more accurate than the baseline)

    Both are relative, so accuracies may be fractions or percentages (as long as both use the same).
    Raises ValueError unless base_acc > 0 and base_tokens > 0.
    """
    if not base_acc > 0 or not base_tokens > 0:
        raise ValueError(f"AES needs a baseline with positive accuracy and length, got "
                         f"base_acc={base_acc}, base_tokens={base_tokens}")
    return (base_tokens - tokens) / base_tokens, (acc - base_acc) / base_acc


def aes(acc: float, tokens: float, base_acc: float, base_tokens: float,
        alpha: float = 1.0, beta: float = 3.0, gamma: float = 5.0) -> float:
    """Accuracy-efficiency score of a model against a baseline (O1-Pruner, Luo et al.,
    arXiv 2501.12570, Sec. 5.1; ALGORITHMS.md 5.3), with dLength, dAcc of :func:`aes_deltas`:

        AES = alpha * dLength + beta  * |dAcc|    if dAcc >= 0
            = alpha * dLength - gamma * |dAcc|    if dAcc <  0

    Defaults are O1-Pruner's alpha=1, beta=3, gamma=5 (gamma > beta: losing accuracy costs more than
    gaining it earns); later papers reuse the name with other weights, so report the weights.
    E.g. LASER-D vs the original model on AIME24, 28.9 -> 34.2 %, 15956 -> 5750 tokens:
    dLength = 10206/15956 = 0.639634, dAcc = 5.3/28.9 = 0.183391, AES = 0.639634 + 3 * 0.183391 = 1.189807.
    """
    d_length, d_acc = aes_deltas(acc, tokens, base_acc, base_tokens)
    if d_acc >= 0:
        return alpha * d_length + beta * abs(d_acc)
    return alpha * d_length - gamma * abs(d_acc)


def excess_length_reduction(grpo_tokens: float, sft_tokens: float, tokens: float) -> float:
    """GFPO's excess length reduction (Shrivastava et al., arXiv 2508.09726, Eq. 4; ALGORITHMS.md 2.2.3
    and 5.3): the share of the length that GRPO added over its SFT start which a method removes,

        ELR = (L_GRPO - L_method) / (L_GRPO - L_SFT)

    with L the mean response tokens on one benchmark: 1 = back at the SFT model's length, 0 = GRPO's,
    < 0 longer than GRPO, > 1 shorter than the SFT model. Only meaningful when GRPO made responses
    longer: raises ValueError unless grpo_tokens > sft_tokens.
    E.g. L_GRPO 200, L_SFT 120, L_method 150: 50 / 80 = 0.625; GFPO's token efficiency on AIME 24 (Table 1,
    rounded lengths): (13.3k - 10.6k) / (13.3k - 10.1k) = 0.84375 (84.6 % printed, from unrounded lengths).
    """
    if not grpo_tokens > sft_tokens:
        raise ValueError(f"ELR needs L_GRPO > L_SFT (the RL baseline longer than its SFT start), got "
                         f"L_GRPO={grpo_tokens:g}, L_SFT={sft_tokens:g}")
    return (grpo_tokens - tokens) / (grpo_tokens - sft_tokens)


def length_deviation(lengths: Sequence[float] | torch.Tensor,
                     targets: Sequence[float] | torch.Tensor | float) -> float:
    """Mean absolute deviation of response lengths from their targets, in tokens:

        deviation = mean_i |lengths_i - targets_i|

    the distance |n_gold - n_generated| that L1's LCPO-Exact reward penalises (Aggarwal and Welleck,
    arXiv 2503.04697, Eq. 1) and whose > 500 fraction is L1's soft violation rate. L1's printed
    "length error" (Sec. 5, Table 2) is a different number, the signed relative error of the mean:
    :func:`relative_length_error`. ``targets`` is one target per response or a single number for all.
    Shapes: (N,), (N,) or scalar -> float. E.g. lengths [100, 250, 500], target 200 ->
    (100 + 50 + 300) / 3 = 150. Raises ValueError for no response or mismatched lengths.
    """
    length, target = _lengths_and_targets(lengths, targets)
    return float((length - target).abs().mean())


def relative_length_error(lengths: Sequence[float] | torch.Tensor, target: float) -> float:
    """L1's length error at one requested budget (arXiv 2503.04697, Sec. 5 and App. A.2; ALGORITHMS.md
    5.3): the signed relative error of the dataset's mean length,

        error = (mean_i lengths_i - target) / target

    E.g. lengths [100, 250, 500], target 200 -> (283.333 - 200) / 200 = 0.416667. Raises ValueError
    for no response or a target that is not positive.
    """
    if not float(target) > 0:
        raise ValueError(f"relative_length_error needs a positive target, got {target}")
    length, _ = _lengths_and_targets(lengths, target)
    return float((length.mean() - float(target)) / float(target))


def _lengths_and_targets(lengths, targets) -> tuple[torch.Tensor, torch.Tensor]:
    length = torch.as_tensor(lengths, dtype=torch.float64).flatten()
    target = torch.as_tensor(targets, dtype=torch.float64)
    if length.numel() == 0:
        raise ValueError("a length metric needs at least one response")
    if target.numel() != 1 and target.numel() != length.numel():
        raise ValueError(f"{length.numel()} lengths but {target.numel()} targets")
    return length, (target.flatten() if target.numel() > 1 else target.reshape(()))


def pareto_frontier(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points, maximising accuracy and minimising mean tokens, sorted by
    tokens (then by index). ``points[i] = (acc_i, mean_tokens_i)``.

    j dominates i when acc_j >= acc_i and tokens_j <= tokens_i with at least one strict inequality
    (the "Pareto frontier" of DLER Fig. 8 and GFPO Fig. 3, ALGORITHMS.md 5.4). Equal points do not
    dominate each other, so duplicates of a frontier point are all on the frontier. Method: sort by
    tokens; within one token value only the most accurate points can survive, and they survive iff
    they beat every point with strictly fewer tokens. E.g. [(0.5, 100), (0.6, 200), (0.55, 300),
    (0.6, 200), (0.4, 100)] -> [0, 1, 3]. Raises ValueError for NaN.
    """
    values = [(float(acc), float(tokens)) for acc, tokens in points]
    if any(math.isnan(a) or math.isnan(t) for a, t in values):
        raise ValueError("pareto_frontier: accuracy and tokens must not be NaN")
    order = sorted(range(len(values)), key=lambda i: (values[i][1], -values[i][0], i))
    frontier: list[int] = []
    best_before = -math.inf  # best accuracy among points with strictly fewer tokens
    start = 0
    while start < len(order):
        tokens = values[order[start]][1]
        end = start
        while end < len(order) and values[order[end]][1] == tokens:
            end += 1
        top = values[order[start]][0]  # the group is sorted by accuracy, best first
        if top > best_before:
            frontier.extend(i for i in order[start:end] if values[i][0] == top)
        best_before = max(best_before, top)
        start = end
    return frontier
