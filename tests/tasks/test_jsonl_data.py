"""The data-set source: vendored benchmarks load with their documented sizes, batches are a seeded
epoch order split across ranks, held-out rows keep file order, and files, directories and column
mappings load through the same class."""
from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
from hydra.utils import instantiate

from rlrun.wiring.cli import compose
from rlrun.tasks.jsonl_data import DEFAULT_PROMPT, DatasetProblems, builtin_names
from rlrun.types import HasMetrics

ROWS = {"math500": 500, "aime24": 30, "aime25": 30, "amc23": 40, "amc": 83, "minerva": 272,
        "olympiadbench": 675, "gsm8k_test": 1319, "gsm8k_train": 7473, "math_train": 7468,
        "aime_1983_2023": 972}
# data option -> (training rows, held-out rows, first held-out uid)
OPTIONS = {"gsm8k": (7473, 1319, "gsm8k-test-00000"), "math": (7468, 500, "test/precalculus/807.json"),
           "math500": (500, 500, "test/precalculus/807.json"), "aime24": (30, 30, "aime-2024-I-01"),
           "aime25": (30, 30, "aime-2025-I-01"), "amc23": (40, 40, "amc-2023-12A-01"),
           "amc": (83, 83, "amc-2022-12A-01"), "minerva": (272, 272, "minerva-000"),
           "olympiadbench": (675, 675, "olympiadbench-1606"), "aime_hist": (972, 30, "aime-2024-I-01")}


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """Keep the arrow caches that ``datasets`` writes inside the test's directory."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_the_package_ships_every_documented_benchmark():
    assert builtin_names() == sorted(ROWS)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_builtin_loads_with_its_documented_row_count(name):
    source = DatasetProblems(f"builtin:{name}", seed=0)
    rows = source.held_out(10**6)
    assert len(source) == len(rows) == ROWS[name]
    assert all(p.prompt.strip() and p.answer for p in rows)
    assert len({p.uid for p in rows}) == ROWS[name]
    assert {p.meta["dataset"] for p in rows} == {name}


def test_builtin_rows_carry_known_values():
    first = DatasetProblems("builtin:math500", seed=0).held_out(2)
    assert [p.uid for p in first] == ["test/precalculus/807.json", "test/intermediate_algebra/1994.json"]
    assert first[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert first[0].meta["level"] == 2 and first[0].meta["subject"] == "Precalculus"
    assert first[0].meta["source"] == "openai/prm800k:prm800k/math_splits/test.jsonl"
    gsm = DatasetProblems("builtin:gsm8k_train", seed=0).held_out(1)[0]
    assert (gsm.uid, gsm.answer) == ("gsm8k-train-00000", "72")
    assert gsm.prompt.startswith("Natalia sold clips to 48 of her friends in April")
    assert "level" not in gsm.meta
    math = DatasetProblems("builtin:math_train", seed=0).held_out(10**6)
    assert [p.uid for p in math if "level" not in p.meta] == ["math-train-02764", "math-train-02823"]
    assert {p.meta["level"] for p in math if "level" in p.meta} == {1, 2, 3, 4, 5}


def test_unknown_builtin_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"'builtin:math5000': no such builtin.*builtin:math500, "):
        DatasetProblems("builtin:math5000", seed=0)


def test_batch_is_deterministic_in_seed_step_and_attempt():
    source = DatasetProblems("builtin:math500", seed=3)
    first = source.batch(step=4, size=8)
    assert first == DatasetProblems("builtin:math500", seed=3).batch(4, 8)
    uids = [p.uid for p in first]
    assert len(set(uids)) == 8
    assert [p.uid for p in source.batch(5, 8)] != uids
    assert [p.uid for p in DatasetProblems("builtin:math500", seed=4).batch(4, 8)] != uids
    refill = [p.uid for p in source.batch(4, 8, attempt=1)]
    assert refill != uids and refill == [p.uid for p in source.batch(4, 8, attempt=1)]
    assert refill != [p.uid for p in source.batch(4, 8, attempt=2)]


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_take_contiguous_shares_of_the_same_batch(world_size):
    source = DatasetProblems("builtin:aime24", seed=1)
    for attempt in (0, 1):
        whole = source.batch(step=5, size=8, attempt=attempt)
        shares = [source.batch(5, 8, rank=r, world_size=world_size, attempt=attempt)
                  for r in range(world_size)]
        assert [len(s) for s in shares] == [8 // world_size] * world_size
        assert [p for share in shares for p in share] == whole


def test_bad_batch_arguments_are_errors():
    source = DatasetProblems("builtin:aime24", seed=0)
    with pytest.raises(ValueError, match=r"prompts per step \(6\) must be divisible .* \(4\)"):
        source.batch(0, 6, rank=0, world_size=4)
    with pytest.raises(ValueError, match=r"rank=2 must be in \[0, world_size=2\)"):
        source.batch(0, 8, rank=2, world_size=2)


def test_epochs_visit_every_row_once_and_wrap_around():
    source = DatasetProblems("builtin:aime24", seed=0)  # 30 rows, 4 per step: epochs end mid-batch
    stream = [p.uid for step in range(15) for p in source.batch(step, 4)]  # 60 rows = 2 epochs
    assert len(set(stream[:30])) == 30 and len(set(stream[30:])) == 30
    assert set(stream[:30]) == set(stream[30:]) and stream[:30] != stream[30:]
    step7 = [p.uid for p in source.batch(7, 4)]  # positions 28, 29 | 30, 31
    assert step7 == stream[28:32]
    big = [p.uid for p in source.batch(0, 64)]  # one batch longer than the data
    assert collections.Counter(collections.Counter(big).values()) == {2: 26, 3: 4}  # 30 + 30 + 4


def test_held_out_keeps_file_order_and_comes_from_the_eval_split():
    source = DatasetProblems("builtin:gsm8k_train", seed=0, eval_path="builtin:gsm8k_test")
    held = source.held_out(3)
    assert [p.uid for p in held] == ["gsm8k-test-00000", "gsm8k-test-00001", "gsm8k-test-00002"]
    assert held[0].answer == "18"
    assert len(source.held_out(5000)) == 1319 and len(source) == 7473
    with pytest.raises(ValueError, match="n must be >= 1"):
        source.held_out(0)


def test_monitor_is_a_fixed_sample_of_training_rows():
    source = DatasetProblems("builtin:gsm8k_train", seed=0, eval_path="builtin:gsm8k_test")
    sample = [p.uid for p in source.monitor(16)]
    assert sample == [p.uid for p in DatasetProblems("builtin:gsm8k_train", seed=0).monitor(16)]
    assert len(set(sample)) == 16 and all(uid.startswith("gsm8k-train-") for uid in sample)
    assert sample != [p.uid for p in source.held_out(10**6)[:16]]  # shuffled, not the first rows
    assert sorted(p.uid for p in DatasetProblems("builtin:aime24", seed=0).monitor(100)) == \
        sorted(p.uid for p in DatasetProblems("builtin:aime24", seed=0).held_out(30))


def test_field_mapping_id_fallback_and_float_answers(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", [
        {"problem": "What is 2+3?", "solution": 5.0, "difficulty": 1},
        {"problem": "What is 7*6?", "solution": "42", "difficulty": 3},
        {"problem": "Half of 5?", "solution": 2.5, "difficulty": None},
    ])
    source = DatasetProblems(str(path), seed=0, prompt="Q: {question}\nA:",
                             fields={"question": "problem", "answer": "solution", "level": "difficulty"})
    rows = source.held_out(10)
    assert [(p.uid, p.prompt, p.answer) for p in rows] == [
        ("mine-0", "Q: What is 2+3?\nA:", "5"), ("mine-1", "Q: What is 7*6?\nA:", "42"),
        ("mine-2", "Q: Half of 5?\nA:", "2.5")]
    assert [p.meta.get("level") for p in rows] == [1, 3, None]
    with pytest.raises(ValueError, match=r"mine.jsonl': none of its 3 rows has both fields \"question\" and "
                                         r"\"answer\" .*; line 1 has keys \"problem\", \"solution\", \"difficulty\"$"):
        DatasetProblems(str(path), seed=0)
    with pytest.raises(ValueError, match="unknown key.*qestion; valid: question, answer, id"):
        DatasetProblems(str(path), seed=0, fields={"qestion": "problem"})


def test_a_local_parquet_file_and_limit(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": [f"p{i}" for i in range(6)], "question": [f"{i}+{i}?" for i in range(6)],
                      "answer": [str(2 * i) for i in range(6)], "level": [1, 1, 2, 2, 3, 3]})
    pq.write_table(table, tmp_path / "set.parquet")
    source = DatasetProblems(str(tmp_path / "set.parquet"), seed=0, limit=4)
    assert len(source) == 4
    assert [(p.uid, p.answer, p.meta["level"]) for p in source.held_out(10)] == [
        ("p0", "0", 1), ("p1", "2", 1), ("p2", "4", 2), ("p3", "6", 2)]
    assert sorted(p.uid for p in source.batch(0, 4)) == ["p0", "p1", "p2", "p3"]


def test_a_local_dataset_directory_with_splits(tmp_path):
    import datasets

    folder = tmp_path / "my_set"
    datasets.Dataset.from_dict({"question": ["a?", "b?", "c?"], "answer": ["1", "2", "3"]}).to_json(
        str(folder / "train.jsonl"))
    write_jsonl(folder / "test.jsonl", [{"question": "y?", "answer": "25"},
                                        {"question": "z?", "answer": "26"}])
    source = DatasetProblems(str(folder), seed=0, split="train", eval_split="test")
    assert sorted(p.uid for p in source.batch(0, 3)) == ["my_set-0", "my_set-1", "my_set-2"]
    assert [(p.uid, p.prompt[:2], p.answer) for p in source.held_out(5)] == [
        ("my_set-0", "y?", "25"), ("my_set-1", "z?", "26")]
    with pytest.raises(ValueError, match=r"could not be loaded: .*; use builtin:<name>"):
        DatasetProblems(str(folder), seed=0, split="validation")


def test_missing_files_and_bad_settings_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match=r"data.source.path='.*nope.jsonl': no such file"):
        DatasetProblems(str(tmp_path / "nope.jsonl"), seed=0)
    with pytest.raises(ValueError, match=r"has no \{question\} placeholder"):
        DatasetProblems("builtin:aime24", seed=0, prompt="Solve it.")
    with pytest.raises(ValueError, match=r"limit=0 must be an int >= 1"):
        DatasetProblems("builtin:aime24", seed=0, limit=0)
    with pytest.raises(ValueError, match=r"split='test' for 'builtin:aime24': a file has one split"):
        DatasetProblems("builtin:aime24", seed=0, split="test")
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(ValueError, match=r"empty.jsonl' \(split='train'\) has no rows; expected rows with the "
                                         r"fields \"question\" and \"answer\" \(data.source.fields\)$"):
        DatasetProblems(str(empty), seed=0)


def test_rows_without_a_question_or_answer_are_skipped_counted_and_warned_about(tmp_path, capsys):
    lines = [json.dumps({"question": "1+1?", "answer": "2"}),
             json.dumps({"answer": "3"}),                      # line 2: no question
             "",                                                # blank: not a row
             json.dumps({"question": "2+2?"}),                  # line 4: no answer
             json.dumps({"question": "3+3?", "answer": None}),  # line 5: null answer
             json.dumps({"question": "4+4?", "answer": "8"}),
             "[1, 2]",                                          # line 7: not an object
             "{\"question\": \"5+5?\", \"answer\":",              # line 8: not JSON
             json.dumps({"question": " ", "answer": "9"}),      # line 9: empty question
             json.dumps({"question": "6+6?", "answer": 12.0})]
    path = tmp_path / "holes.jsonl"
    path.write_text("\n".join(lines) + "\n")
    source = DatasetProblems(str(path), seed=0)
    assert [(p.uid, p.answer) for p in source.held_out(10)] == [("holes-0", "2"), ("holes-4", "8"),
                                                               ("holes-8", "12")]
    assert len(source) == 3 and source.skipped_rows == 6
    assert source.metrics() == {"data/skipped_rows": 6.0}
    assert isinstance(source, HasMetrics)
    assert capsys.readouterr().err == (
        f"rlrun: warning: {path}: skipped 6 of 9 rows missing the \"question\" or \"answer\" field or not a "
        "JSON object (lines 2, 4, 5, 7, 8 and 1 more)\n")
    # a held-out file's skipped rows are warned about but not counted in the training metric
    held = write_jsonl(tmp_path / "held.jsonl", [{"question": "x?", "answer": "1"}, {"question": "y?"},
                                                 {"question": "z?", "answer": ""}])
    source = DatasetProblems(str(path), seed=0, eval_path=str(held))
    assert [p.uid for p in source.held_out(10)] == ["held-0"] and source.metrics() == {"data/skipped_rows": 6.0}
    assert capsys.readouterr().err.splitlines()[1] == (
        f"rlrun: warning: {held}: skipped 2 of 3 rows missing the \"answer\" field (lines 2, 3)")


def test_skipped_rows_of_a_parquet_file_are_row_indices_and_only_rank_0_warns(tmp_path, capsys, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rlrun.runtime import dist

    pq.write_table(pa.table({"problem": ["a?", "b?", None, "d?"], "answer": ["1", None, "3", "4"]}),
                   tmp_path / "set.parquet")
    source = DatasetProblems(str(tmp_path / "set.parquet"), seed=0, fields={"question": "problem"})
    assert [p.uid for p in source.held_out(10)] == ["set-0", "set-3"]
    err = capsys.readouterr().err  # after the progress bars of datasets
    assert [line for line in err.splitlines() if line.startswith("rlrun:")] == [
        f"rlrun: warning: {tmp_path / 'set.parquet'}: skipped 2 of 4 rows missing the \"problem\" or \"answer\" "
        "field (rows 1, 2)"]
    monkeypatch.setattr(dist, "is_main", lambda: False)
    assert DatasetProblems(str(tmp_path / "set.parquet"), seed=0, fields={"question": "problem"}).skipped_rows == 2
    assert "rlrun:" not in capsys.readouterr().err


def test_a_file_without_a_usable_row_is_one_value_error(tmp_path, capsys):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"problem": "1+1?", "answer": None}, {"problem": "2+2?"}])
    with pytest.raises(ValueError) as caught:
        DatasetProblems(str(path), seed=0)
    assert str(caught.value) == (
        f"data.source.path='{path}': none of its 2 rows has both fields \"question\" and \"answer\" "
        "(data.source.fields.question/answer name the columns); line 1 has keys \"problem\", \"answer\" "
        "with \"answer\" null")
    with pytest.raises(ValueError, match=r"none of its 2 rows has both fields \"problem\" and \"solution\" "):
        DatasetProblems(str(path), seed=0, fields={"question": "problem", "answer": "solution"})
    (tmp_path / "text.jsonl").write_text("\nquestion: 1+1?\n")
    with pytest.raises(ValueError, match=r"text.jsonl': none of its 1 row has .*; line 2 is not a JSON object$"):
        DatasetProblems(str(tmp_path / "text.jsonl"), seed=0)
    assert capsys.readouterr().err == ""  # an error, not also a warning


def test_default_prompt_keeps_the_boxed_braces():
    assert DEFAULT_PROMPT == ("{question}\nPlease reason step by step, and put your final answer "
                              "within \\boxed{}.\n")
    problem = DatasetProblems("builtin:aime24", seed=0).held_out(1)[0]
    assert problem.prompt.startswith("Every morning Aya goes for a $9$-kilometer-long walk")
    assert problem.prompt.endswith("minutes spent in the coffee shop.\nPlease reason step by step, and put "
                                   "your final answer within \\boxed{}.\n")


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_data_option_builds_its_source(option):
    cfg = compose([f"data={option}", "seed=5"])
    assert cfg.data.verifier._target_ == "rlrun.tasks.math_verifier.MathVerifier"
    assert cfg.data.source.prompt == DEFAULT_PROMPT  # the yaml escaping gives the same text
    source = instantiate(cfg.data.source)
    train, held, first = OPTIONS[option]
    assert (len(source), len(source.held_out(10**6)), source.held_out(1)[0].uid) == (train, held, first)
    assert source.seed == 5


def test_generic_option_takes_a_file_and_a_column_name(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"problem": "1+1?", "answer": "2"}])
    cfg = compose(["data=jsonl", f"data.source.path={path}", "data.source.fields.question=problem"])
    source = instantiate(cfg.data.source)
    expected = ("rows-0", DEFAULT_PROMPT.replace("{question}", "1+1?"), "2")
    assert [(p.uid, p.prompt, p.answer) for p in source.held_out(1)] == [expected]
