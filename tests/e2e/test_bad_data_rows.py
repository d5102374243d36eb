"""A real ``rlrun`` process on a jsonl file with bad rows (``data=jsonl``): the rows without a
question or answer are skipped with one warning line and counted in every step's
``data/skipped_rows``; a file with no usable row stops the run with one ``rlrun: error:`` line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import child_env

GSM8K_TEST = Path(__file__).resolve().parents[2] / "rlrun" / "tasks" / "benchmarks" / "gsm8k_test.jsonl"


def rlrun(run_dir: Path, data_file: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "rlrun", "debug=cpu", "eval=none", "curriculum.max_new_tokens=48",
               "data=jsonl", f"data.source.path={data_file}", f"hydra.run.dir={run_dir}"]
    return subprocess.run(command, capture_output=True, text=True, env=child_env(OMP_NUM_THREADS="1"),
                          timeout=600)


def test_bad_rows_are_skipped_warned_about_and_counted(tmp_path):
    rows = [json.loads(line) for line in GSM8K_TEST.read_text().splitlines()[:6]]
    del rows[1]["answer"]
    rows[4]["question"] = None
    data_file = tmp_path / "some_gsm8k.jsonl"
    data_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    done = rlrun(tmp_path / "run", data_file)
    assert done.returncode == 0, done.stderr[-2000:]
    warning = (f"rlrun: warning: {data_file}: skipped 2 of 6 rows missing the \"question\" or \"answer\" field "
               "(lines 2, 5)")
    assert done.stderr.splitlines().count(warning) == 1, done.stderr[-2000:]
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in logged] == [1, 2]
    assert [line["data/skipped_rows"] for line in logged] == [2.0, 2.0]


def test_a_file_without_a_usable_row_is_one_error_line(tmp_path):
    data_file = tmp_path / "renamed.jsonl"
    data_file.write_text("".join(json.dumps({"problem": f"{i}+{i}?", "solution": str(2 * i)}) + "\n"
                                 for i in range(3)))
    done = rlrun(tmp_path / "run", data_file)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.splitlines() == [
        f"rlrun: error: data.source.path='{data_file}': none of its 3 rows has both fields \"question\" and "
        "\"answer\" (data.source.fields.question/answer name the columns); line 1 has keys \"problem\", "
        "\"solution\""], done.stderr[-2000:]
