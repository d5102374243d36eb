"""Problems from a data set of question/answer rows: a vendored benchmark, a local file, or a
Hugging Face dataset.

``DatasetProblems`` is a data source with the interface of :class:`rlrun.tasks.arith.ArithProblems`
(``batch``, ``held_out``, ``monitor``), so the loop trains and evaluates on real maths data the
same way it does on the synthetic task. Where the rows come from (``path``):

* ``builtin:<name>``: a JSONL file shipped in ``rlrun/tasks/benchmarks/`` (its README.md gives
  origin, licence and answer normalisation of each), read with the standard library;
* a ``.jsonl`` file: read line by line with the standard library (blank lines are not rows);
* a ``.json`` or ``.parquet`` file: ``datasets.load_dataset("json"|"parquet", data_files=path,
  split="train")``;
* anything else, a Hugging Face dataset id or a local directory of data files:
  ``datasets.load_dataset(path, name=config, split=split)``.

Training order: epochs over the training rows, each epoch in its own seed-derived permutation, so
``batch(step, size)`` is the rows at positions ``step*size .. (step+1)*size - 1`` of that endless
sequence and depends only on ``(seed, step, size)``. A refill (``attempt`` > 0, dynamic sampling)
takes ``size`` rows from a permutation of its own, keyed by ``(seed, step, attempt)``; it may repeat
a row of the same step. A problem's uid is its row's id, so a question keeps its uid when it comes
back (what per-question histories need).

Rows without a question or an answer (the field absent, null or empty) and lines that are not a
JSON object are skipped: one warning line on stderr (rank 0) names the file, how many rows and which
(file lines from 1, or dataset row indices from 0), and the training file's count is the metric
``data/skipped_rows``. A file with no usable row is a one-line ValueError.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from rlrun.tasks.arith import check_batch_args
from rlrun.types import Problem

BENCHMARKS = Path(__file__).resolve().parent / "benchmarks"
BUILTIN = "builtin:"
FILE_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
DEFAULT_PROMPT = "{question}\nPlease reason step by step, and put your final answer within \\boxed{}.\n"
DEFAULT_FIELDS = {"question": "question", "answer": "answer", "id": "id",
                  "level": "level", "subject": "subject", "source": "source"}
REQUIRED = ("question", "answer")
META = ("level", "subject", "source")  # copied into Problem.meta when the row has them
_TRAIN_STREAM, _REFILL_STREAM, _MONITOR_STREAM = 1, 2, 3
SHOWN_SKIPPED = 5  # the skipped rows a warning names before "and N more"

Row = tuple[str, str, str, dict[str, Any]]  # (uid, question, answer, meta)


def builtin_names() -> list[str]:
    """The vendored data sets (``builtin:<name>``)."""
    return sorted(p.stem for p in BENCHMARKS.glob("*.jsonl"))


def load_records(path: str, split: str = "train",
                 config: str | None = None) -> tuple[list[dict | None], list[str], list[int] | None]:
    """The rows of ``path`` as dicts (None for a line of a JSONL file that is not a JSON object),
    the column names, and each row's line in the file (None where rows are not lines)."""
    if path.startswith(BUILTIN):
        name = path[len(BUILTIN):]
        if name not in builtin_names():
            raise ValueError(f"data.source.path={path!r}: no such builtin data set; valid: "
                             + ", ".join(BUILTIN + n for n in builtin_names()))
        return read_jsonl(BENCHMARKS / f"{name}.jsonl")
    suffix = Path(path).suffix.lower()
    if suffix in FILE_FORMATS and not Path(path).is_file():
        raise ValueError(f"data.source.path={path!r}: no such file")
    if suffix == ".jsonl":
        try:
            return read_jsonl(Path(path))
        except OSError as exc:
            raise ValueError(_load_error(path, split, config, exc)) from exc
    import datasets  # heavy: imported only when a file or dataset is loaded

    try:
        if suffix in FILE_FORMATS:
            data = datasets.load_dataset(FILE_FORMATS[suffix], data_files=path, split="train")
        else:
            data = datasets.load_dataset(path, name=config, split=split)
    except Exception as exc:  # the Hub, the file system and the builders raise many kinds
        raise ValueError(_load_error(path, split, config, exc)) from exc
    return data.to_list(), list(data.column_names), None


def read_jsonl(file: Path) -> tuple[list[dict | None], list[str], list[int]]:
    """The non-blank lines of a JSONL file as dicts (None for a line that is not a JSON object, or
    not UTF-8), the keys of all of them in order of appearance, and each row's line number (from 1)."""
    records: list[dict | None] = []
    lines: list[int] = []
    with open(file, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8"))
            except ValueError:  # JSONDecodeError, UnicodeDecodeError
                record = None
            records.append(record if isinstance(record, dict) else None)
            lines.append(number)
    columns = list(dict.fromkeys(key for record in records if record is not None for key in record))
    return records, columns, lines


def _load_error(path: str, split: str, config: str | None, exc: BaseException) -> str:
    def first_line(e: BaseException) -> str:
        return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"

    root = exc
    while (root.__cause__ or root.__context__) is not None:
        root = root.__cause__ or root.__context__
    why = first_line(exc) + ("" if root is exc else f" ({first_line(root)})")
    return (f"data.source.path={path!r} (split={split!r}, config={config!r}) could not be loaded: "
            f"{why}; use builtin:<name> ({', '.join(builtin_names())}), "
            f"a .jsonl/.json/.parquet file, a dataset directory or a Hugging Face dataset id")


def data_name(path: str) -> str:
    """A short name for ids made up for rows without one: the builtin name, file stem or last part."""
    if path.startswith(BUILTIN):
        return path[len(BUILTIN):]
    p = Path(path.rstrip("/"))
    return p.stem if p.suffix.lower() in FILE_FORMATS else p.name


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 27.0 -> "27" (some data sets store integer answers as floats)
    return "" if value is None else str(value).strip()


def _places(unit: str, numbers: list[int]) -> str:
    """``lines 3, 7`` / ``line 3`` / ``rows 0, 2, 4, 6, 8 and 3 more``."""
    shown = ", ".join(str(n) for n in numbers[:SHOWN_SKIPPED])
    more = f" and {len(numbers) - SHOWN_SKIPPED} more" if len(numbers) > SHOWN_SKIPPED else ""
    return f"{unit}{'s' if len(numbers) > 1 else ''} {shown}{more}"


def _quoted(names: list[str], conjunction: str) -> str:
    return f" {conjunction} ".join(json.dumps(name) for name in names)


def _has(record: dict | None, columns: list[str]) -> str:
    """What a skipped row holds: ``has keys "problem", "solution"`` or ``is not a JSON object``."""
    if record is None:
        return "is not a JSON object"
    if not record:
        return "has no keys"
    empty = [c for c in columns if c in record and not _text(record[c])]
    value = "null" if all(record[c] is None for c in empty) else "empty"
    return (f"has keys {', '.join(json.dumps(k) for k in record)}"
            + (f" with {_quoted(empty, 'and')} {value}" if empty else ""))


def skipped_warning(path: str, total: int, skipped: list[tuple[int, dict | None, list[str]]],
                    unit: str, required: list[str]) -> str:
    """The warning line for ``skipped`` = ``(line or row, record, missing columns)`` of ``total`` rows;
    ``required`` is the question and answer columns."""
    missing = [c for c in required if any(record is not None and c in cols for _, record, cols in skipped)]
    why = [f"missing the {_quoted(missing, 'or')} field"] if missing else []
    if any(record is None for _, record, _ in skipped):
        why.append("not a JSON object" if missing else "that are not JSON objects")
    return (f"rlrun: warning: {path}: skipped {len(skipped)} of {total} rows {' or '.join(why)} "
            f"({_places(unit, [where for where, _, _ in skipped])})")


def _warn(message: str) -> None:
    from rlrun.runtime import dist  # lazy: the data source is importable without the runtime

    if dist.is_main():
        print(message, file=sys.stderr, flush=True)


class DatasetProblems:
    """Training, held-out and monitor problems from question/answer rows (see the module docstring).

    ``fields`` maps rlrun's names to the data's columns: ``question`` and ``answer`` (required),
    ``id`` (optional: ``<name>-<row index>`` when the column is absent), and ``level``, ``subject``,
    ``source`` (optional, copied into ``Problem.meta`` when the column exists and the row's value is
    not null; ``meta["level"]`` is the difficulty that per-difficulty curricula read). Keys left
    out keep their defaults (the same names); a null value turns an optional field off.
    ``meta["dataset"]`` is the builtin name, the file's stem or the last part of the id. Answers
    are text (an integral float such as ``27.0`` becomes ``"27"``). ``prompt`` is the text shown to
    the model, with ``{question}`` replaced by the question (the only placeholder; other braces, as
    in ``\\boxed{}``, stay as written). ``limit`` keeps the first ``limit`` rows of ``path``.

    A row without a question or an answer (absent, null or empty) or a line that is not a JSON
    object is skipped with one warning line on stderr (``limit`` counts it among the first rows);
    the number skipped from the training rows is ``metrics()["data/skipped_rows"]``
    (``HasMetrics``), and a file with no usable row is a ValueError.

    ``held_out`` rows: ``eval_path`` (with ``eval_config``, split ``eval_split`` or "train") when
    given; else split ``eval_split`` of ``path`` when given; else the training rows themselves.
    """

    def __init__(self, path: str, seed: int, split: str = "train", config: str | None = None,
                 eval_path: str | None = None, eval_split: str | None = None,
                 eval_config: str | None = None, fields: dict[str, str | None] | None = None,
                 prompt: str = DEFAULT_PROMPT, limit: int | None = None) -> None:
        if not isinstance(path, str) or not path:
            raise ValueError(f"data.source.path={path!r} must be builtin:<name>, a file, a dataset "
                             "directory or a Hugging Face dataset id")
        if "{question}" not in prompt:
            raise ValueError(f"data.source.prompt={prompt!r} has no {{question}} placeholder")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError(f"data.source.limit={limit!r} must be an int >= 1 (or null: every row)")
        given = dict(fields or {})
        unknown = sorted(set(given) - set(DEFAULT_FIELDS))
        if unknown:
            raise ValueError(f"data.source.fields has unknown key(s) {', '.join(unknown)}; valid: "
                             + ", ".join(DEFAULT_FIELDS))
        for key in REQUIRED:
            if key in given and not given[key]:
                raise ValueError(f"data.source.fields.{key}={given[key]!r}: a column name is needed")
        self.fields = {**DEFAULT_FIELDS, **given}
        self.seed, self.prompt, self.path = int(seed), prompt, path
        self.train, self.skipped_rows = self._rows(path, split, config, limit)
        if eval_path is None and eval_split in (None, split):
            self.eval = self.train
        else:
            if eval_path is None:
                self.eval, _ = self._rows(path, eval_split, config, None)
            else:
                self.eval, _ = self._rows(eval_path, eval_split or "train", eval_config, None, key="eval_path")
        self._perms: dict[tuple[int, ...], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.train)

    def metrics(self) -> dict[str, float]:
        """``data/skipped_rows``: the training rows skipped for a missing question or answer (``HasMetrics``)."""
        return {"data/skipped_rows": float(self.skipped_rows)}

    def _rows(self, path: str, split: str, config: str | None, limit: int | None,
              key: str = "path") -> tuple[list[Row], int]:
        """The usable rows of ``path`` and how many were skipped (warned about on stderr)."""
        if (path.startswith(BUILTIN) or Path(path).suffix.lower() in FILE_FORMATS) and split != "train":
            raise ValueError(f"split={split!r} for {path!r}: a file has one split, 'train'; "
                             "splits apply to dataset directories and Hugging Face ids")
        records, columns, lines = load_records(path, split, config)
        if limit is not None:
            records = records[:limit]
        required = [self.fields[k] for k in REQUIRED]
        if not records:
            raise ValueError(f"data.source.{key}={path!r} (split={split!r}) has no rows; expected rows "
                             f"with the fields {_quoted(required, 'and')} (data.source.fields)")
        used = {k: column for k, column in self.fields.items()
                if column is not None and (k in REQUIRED or column in columns)}
        name = data_name(path)
        unit, places = ("line", lines) if lines is not None else ("row", list(range(len(records))))
        rows: list[Row] = []
        skipped: list[tuple[int, dict | None, list[str]]] = []
        for index, record in enumerate(records):
            texts = {k: _text(record.get(used[k])) for k in REQUIRED} if record is not None else {}
            missing = [used[k] for k in REQUIRED if not texts.get(k)]
            if missing:
                skipped.append((places[index], record, missing))
                continue
            uid = _text(record.get(used["id"])) if "id" in used else ""
            meta = {"dataset": name}
            meta.update({k: record[used[k]] for k in META if k in used and record.get(used[k]) is not None})
            rows.append((uid or f"{name}-{index}", texts["question"], texts["answer"], meta))
        if not rows:
            where, record, _ = skipped[0]
            rows_text = f"{len(records)} row{'s' if len(records) > 1 else ''}"
            raise ValueError(f"data.source.{key}={path!r}: none of its {rows_text} has both fields "
                             f"{_quoted(required, 'and')} (data.source.fields.question/answer name the "
                             f"columns); {unit} {where} {_has(record, required)}")
        if skipped:
            _warn(skipped_warning(path, len(records), skipped, unit, required))
        return rows, len(skipped)

    def _problem(self, row: Row) -> Problem:
        uid, question, answer, meta = row
        return Problem(uid=uid, prompt=self.prompt.replace("{question}", question), answer=answer,
                       meta=dict(meta))

    def _permutation(self, key: tuple[int, ...]) -> np.ndarray:
        if key not in self._perms:
            if len(self._perms) >= 8:
                self._perms.clear()
            self._perms[key] = np.random.default_rng(list(key)).permutation(len(self.train))
        return self._perms[key]

    def _stream(self, key: tuple[int, ...], start: int, count: int) -> list[int]:
        """Rows at positions ``start .. start+count-1`` of the epochs ``key + (epoch,)``."""
        n, out, position = len(self.train), [], start
        while len(out) < count:
            epoch, offset = divmod(position, n)
            take = min(count - len(out), n - offset)
            out.extend(int(i) for i in self._permutation((*key, epoch))[offset: offset + take])
            position += take
        return out

    def batch(self, step: int, size: int, rank: int = 0, world_size: int = 1,
              attempt: int = 0) -> list[Problem]:
        check_batch_args(step, size, rank, world_size, attempt)
        share = size // world_size
        first = rank * share
        if attempt == 0:
            picked = self._stream((self.seed, _TRAIN_STREAM), step * size + first, share)
        else:
            picked = self._stream((self.seed, _REFILL_STREAM, step, attempt), first, share)
        return [self._problem(self.train[i]) for i in picked]

    def held_out(self, n: int) -> list[Problem]:
        """The first ``n`` evaluation rows in file order (all of them when ``n`` >= their number)."""
        if n < 1:
            raise ValueError(f"held_out(n={n}): n must be >= 1")
        return [self._problem(row) for row in self.eval[:n]]

    def monitor(self, n: int) -> list[Problem]:
        """A fixed sample of ``n`` training rows (all of them, shuffled, when ``n`` >= their number)."""
        if n < 1:
            raise ValueError(f"monitor(n={n}): n must be >= 1")
        picked = np.random.default_rng([self.seed, _MONITOR_STREAM]).permutation(len(self.train))[:n]
        return [self._problem(self.train[int(i)]) for i in picked]
