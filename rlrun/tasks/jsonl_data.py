"""Problems from a data set of question/answer rows: a vendored benchmark, a local file, or a
Hugging Face dataset.

``DatasetProblems`` is a data source with the interface of :class:`rlrun.tasks.arith.ArithProblems`
(``batch``, ``held_out``, ``monitor``), so the loop trains and evaluates on real maths data the
same way it does on the synthetic task. Where the rows come from (``path``):

* ``builtin:<name>``: a JSONL file shipped in ``rlrun/tasks/benchmarks/`` (its README.md gives
  origin, licence and answer normalisation of each), read with the standard library;
* a ``.jsonl``, ``.json`` or ``.parquet`` file: ``datasets.load_dataset("json"|"parquet",
  data_files=path, split="train")``;
* anything else, a Hugging Face dataset id or a local directory of data files:
  ``datasets.load_dataset(path, name=config, split=split)``.

Training order: epochs over the training rows, each epoch in its own seed-derived permutation, so
``batch(step, size)`` is the rows at positions ``step*size .. (step+1)*size - 1`` of that endless
sequence and depends only on ``(seed, step, size)``. A refill (``attempt`` > 0, dynamic sampling)
takes ``size`` rows from a permutation of its own, keyed by ``(seed, step, attempt)``; it may repeat
a row of the same step. A problem's uid is its row's id, so a question keeps its uid when it comes
back (what per-question histories need).
"""
from __future__ import annotations

import json
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

Row = tuple[str, str, str, dict[str, Any]]  # (uid, question, answer, meta)


def builtin_names() -> list[str]:
    """The vendored data sets (``builtin:<name>``)."""
    return sorted(p.stem for p in BENCHMARKS.glob("*.jsonl"))


def load_records(path: str, split: str = "train",
                 config: str | None = None) -> tuple[list[dict], list[str]]:
    """The rows of ``path`` as dicts, and the column names."""
    if path.startswith(BUILTIN):
        name = path[len(BUILTIN):]
        if name not in builtin_names():
            raise ValueError(f"data.source.path={path!r}: no such builtin data set; valid: "
                             + ", ".join(BUILTIN + n for n in builtin_names()))
        with open(BENCHMARKS / f"{name}.jsonl", encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
        columns = list(dict.fromkeys(key for record in records for key in record))
        return records, columns
    import datasets  # heavy: imported only when a file or dataset is loaded

    suffix = Path(path).suffix.lower()
    if suffix in FILE_FORMATS and not Path(path).is_file():
        raise ValueError(f"data.source.path={path!r}: no such file")
    try:
        if suffix in FILE_FORMATS:
            data = datasets.load_dataset(FILE_FORMATS[suffix], data_files=path, split="train")
        else:
            data = datasets.load_dataset(path, name=config, split=split)
    except Exception as exc:  # the Hub, the file system and the builders raise many kinds
        raise ValueError(_load_error(path, split, config, exc)) from exc
    return data.to_list(), list(data.column_names)


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
        self.train = self._rows(path, split, config, limit)
        if eval_path is None and eval_split in (None, split):
            self.eval = self.train
        else:
            if eval_path is None:
                self.eval = self._rows(path, eval_split, config, None)
            else:
                self.eval = self._rows(eval_path, eval_split or "train", eval_config, None)
        self._perms: dict[tuple[int, ...], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.train)

    def _rows(self, path: str, split: str, config: str | None, limit: int | None) -> list[Row]:
        if (path.startswith(BUILTIN) or Path(path).suffix.lower() in FILE_FORMATS) and split != "train":
            raise ValueError(f"split={split!r} for {path!r}: a file has one split, 'train'; "
                             "splits apply to dataset directories and Hugging Face ids")
        records, columns = load_records(path, split, config)
        if limit is not None:
            records = records[:limit]
        if not records:
            raise ValueError(f"data.source.path={path!r} (split={split!r}) has no rows")
        used: dict[str, str] = {}
        for key, column in self.fields.items():
            if column is None:
                continue
            if column in columns:
                used[key] = column
            elif key in REQUIRED:
                raise ValueError(f"data.source.fields.{key}={column!r} is not a column of {path!r}; "
                                 f"available columns: {', '.join(columns)}")
        name = data_name(path)
        rows: list[Row] = []
        for index, record in enumerate(records):
            texts = {key: _text(record.get(used[key])) for key in REQUIRED}
            for key, text in texts.items():
                if not text:
                    raise ValueError(f"row {index} of {path!r} has an empty {key} "
                                     f"(column {used[key]!r}); drop the row or map another column")
            uid = _text(record.get(used["id"])) if "id" in used else ""
            meta = {"dataset": name}
            meta.update({k: record[used[k]] for k in META if k in used and record.get(used[k]) is not None})
            rows.append((uid or f"{name}-{index}", texts["question"], texts["answer"], meta))
        return rows

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
