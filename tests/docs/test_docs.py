"""The documentation: the MkDocs site builds with ``--strict`` (a broken link or anchor fails it),
README.md stays a landing page whose links resolve, every ``make <target>`` shown names a Makefile
target, and the commands of the marked code blocks run as shown.

A fenced block is run when the line just before it is ``<!-- test: run[, exit=N][, match] -->``
(convention documented in docs/adding-a-method.md, "The docs are tested"). Only the console commands
(``rlrun``, ``rlrun-eval``, ``rlrun-pareto``) of the venv are run, never rlrun's modules imported, so
the test does not depend on where the package keeps its code.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's bin: rlrun, rlrun-eval, rlrun-pareto, mkdocs
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
README_MAX_BYTES = 10 * 1024
COMMAND_TIMEOUT_S = 600  # a 2-step debug=cpu run takes ~15 s alone on 2 cores, much more when shared
MARK = re.compile(r"^<!--\s*test:\s*(.*?)\s*-->\s*$")
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "HYDRA_FULL_ERROR")


@dataclass
class Command:
    line: str
    output: list[str] = field(default_factory=list)  # the lines shown after it (checked with `match`)


@dataclass
class Block:
    where: str  # file:line of the marker
    exit: int
    match: bool
    commands: list[Command]


def parse_marker(text: str, where: str) -> tuple[int, bool]:
    """``run``, ``exit=N``, ``match`` -> (expected exit status, check output)."""
    words = [w.strip() for w in text.split(",") if w.strip()]
    if not words or words[0] != "run":
        raise ValueError(f"{where}: a test marker starts with 'run': <!-- test: run[, exit=N][, match] -->")
    status, match = 0, False
    for word in words[1:]:
        if word == "match":
            match = True
        elif word.startswith("exit="):
            status = int(word.removeprefix("exit="))
        else:
            raise ValueError(f"{where}: unknown test marker option {word!r} (exit=N, match)")
    return status, match


def parse_commands(body: list[str]) -> list[Command]:
    """Lines starting with ``$ `` are commands and the others their output, if there are any such
    lines; else every non-blank line is a command. A trailing backslash continues a command."""
    prompted = any(line.startswith("$ ") for line in body)
    commands: list[Command] = []
    pending = ""
    for line in body:
        if prompted and not line.startswith("$ ") and not pending:
            if commands and line.strip():
                commands[-1].output.append(line.strip())
            continue
        text = line[2:] if prompted and line.startswith("$ ") else line
        if not text.strip() and not pending:
            continue
        if text.rstrip().endswith("\\"):
            pending += text.strip()[:-1].strip() + " "
            continue
        commands.append(Command(pending + text.strip()))
        pending = ""
    return commands


def marked_blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    blocks = []
    for i, line in enumerate(lines):
        found = MARK.match(line)
        if not found:
            continue
        where = f"{path.relative_to(ROOT)}:{i + 1}"
        if i + 1 >= len(lines) or not lines[i + 1].startswith("```"):
            raise ValueError(f"{where}: a test marker must be the line just before a fenced code block")
        end = next((j for j in range(i + 2, len(lines)) if lines[j].startswith("```")), None)
        if end is None:
            raise ValueError(f"{where}: the marked code block is not closed")
        status, match = parse_marker(found.group(1), where)
        blocks.append(Block(where, status, match, parse_commands(lines[i + 2:end])))
    return blocks


BLOCKS = [block for page in PAGES for block in marked_blocks(page)]


def command_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["NO_MKDOCS_2_WARNING"] = "1"
    return env


def mkdocs(config: Path, site: Path) -> subprocess.CompletedProcess:
    exe = BIN / "mkdocs"
    assert exe.exists(), f"{exe} is missing: install the dev extras (pip install -e '.[dev]', or make test)"
    return subprocess.run([str(exe), "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
                          cwd=config.parent, env=command_env(), capture_output=True, text=True, timeout=300)


# -- the site ----------------------------------------------------------------------------------------
def test_site_builds_strict(tmp_path):
    done = mkdocs(ROOT / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "index.html").exists()
    # every markdown table renders as one (a bare | inside a cell silently turns a table into text)
    for page in sorted((ROOT / "docs").glob("*.md")):
        tables = len(re.findall(r"^\|[-:| ]+\|\s*$", page.read_text(), flags=re.M))
        html = tmp_path / "site" / ("" if page.stem == "index" else page.stem) / "index.html"
        assert html.read_text().count("<table") == tables, f"{page.name}: a table does not render"


def test_a_broken_link_fails_the_build(tmp_path):
    """The strict build is what catches broken links and anchors: break one on purpose."""
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    with open(tmp_path / "docs" / "index.md", "a") as f:
        f.write("\n[a page that is not there](no-such-page.md), [an anchor](cli.md#no-such-anchor)\n")
    done = mkdocs(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0
    assert "no-such-page.md" in done.stdout + done.stderr
    assert "no-such-anchor" in done.stdout + done.stderr


# -- the README ------------------------------------------------------------------------------------
def test_readme_is_a_landing_page():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move details into docs/ (at most {README_MAX_BYTES})"


def test_readme_relative_links_exist():
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", text)
    assert targets, "README.md links into the docs"
    missing = [t for t in targets
               if not re.match(r"^(https?:|mailto:|#)", t) and not (ROOT / t.split("#")[0]).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


# -- paths and the package layout -----------------------------------------------------------------
EXAMPLE_PATHS = {"conf/reward/short_is_good.yaml"}  # the file adding-a-method.md tells you to create


def test_repo_paths_named_exist():
    """Every ``rlrun/...``, ``tests/...``, ``scripts/...``, ``conf/...`` or ``docs/...`` path the pages
    name (in code) exists: the docs follow the code when files move."""
    missing = []
    for page in PAGES:
        for match in re.finditer(r"(?<![\w/.])((?:rlrun|tests|scripts|conf|docs)/[\w/.-]*\w)", code_of(page.read_text())):
            path = match.group(1).split("::")[0]
            if path not in EXAMPLE_PATHS and not (ROOT / path).exists():
                missing.append(f"{page.relative_to(ROOT)}: {path}")
    assert not missing, f"paths named in the docs that do not exist: {sorted(set(missing))}"


def test_layout_matches_the_package():
    """The package map in docs/design.md names every top-level module and package of rlrun/, and every
    file and folder it names under them exists."""
    text = (ROOT / "docs" / "design.md").read_text()
    block = re.search(r"^## Layout\n+```\n(.*?)^```", text, flags=re.M | re.S).group(1).splitlines()
    start = block.index("rlrun/")
    named, wrong, top = set(), [], None
    for line in block[start + 1:]:
        if not line.startswith(" "):
            break  # the next top-level entry (scripts/, ...)
        entry = re.match(r"^  (\w+)(/|\.py)", line)
        if entry:
            top = entry.group(1) + entry.group(2)
            named.add(top)
            line = line[entry.end():]
        base = ROOT / "rlrun" / top.rstrip("/") if top.endswith("/") else ROOT / "rlrun"
        if not (ROOT / "rlrun" / top).exists():
            wrong.append(f"rlrun/{top}")
        for name in re.findall(r"\b(\w+\.py)\b", line):
            if not list(base.rglob(name)):
                wrong.append(f"{base.relative_to(ROOT)}/**/{name}")
        for name in re.findall(r"(?<![\w/])(\w+)/(?!\w)", line):
            if not (base / name).is_dir():
                wrong.append(f"{base.relative_to(ROOT)}/{name}/")
    actual = {p.name + ("/" if p.is_dir() else "") for p in (ROOT / "rlrun").iterdir()
              if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and not p.name.startswith("__"))}
    assert not wrong, f"docs/design.md's layout names what rlrun/ does not have: {wrong}"
    assert actual <= named, f"docs/design.md's layout leaves out: {sorted(actual - named)}"


# -- make targets ------------------------------------------------------------------------------------
def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return {m.group(1) for m in re.finditer(r"^([A-Za-z0-9_.%-]+)\s*:(?!=)", text, flags=re.M)}


def is_target(name: str, targets: set[str]) -> bool:
    """``name`` is a target or matches a pattern rule's (``repro-%``)."""
    return name in targets or any("%" in t and re.fullmatch(re.escape(t).replace("%", ".+"), name) for t in targets)


def code_of(markdown: str) -> str:
    """The fenced blocks and inline code spans of a page."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", markdown, flags=re.M | re.S)
    rest = re.sub(r"^```[^\n]*\n.*?^```", "", markdown, flags=re.M | re.S)
    return "\n".join(fenced + re.findall(r"`([^`\n]+)`", rest))


def test_every_make_target_shown_exists():
    targets = makefile_targets()
    assert {"demo", "test", "docs"} <= targets
    shown = {(page.relative_to(ROOT).as_posix(), name) for page in PAGES
             for name in re.findall(r"(?<![\w$(-])make\s+(?:[A-Z_]+=\S+\s+)*([a-z][a-z0-9_-]*)",
                                        re.sub(r"(?<=-)<[a-z-]+>", "x", code_of(page.read_text())))}  # make repro-<paper>
    assert len(shown) >= 5
    unknown = sorted(f"{page}: make {name}" for page, name in shown if not is_target(name, targets))
    assert is_target("repro-drpo-small", targets) and not is_target("repro", targets)
    assert not unknown, f"not Makefile targets: {unknown}"


# -- the marked commands ---------------------------------------------------------------------------
def test_marker_parsing():
    assert parse_marker("run", "x") == (0, False)
    assert parse_marker("run, exit=2, match", "x") == (2, True)
    cmds = parse_commands(["$ rlrun a=1", "rlrun: error: x", "...", "$ rlrun \\", "  b=2", "out"])
    assert [c.line for c in cmds] == ["rlrun a=1", "rlrun b=2"]
    assert cmds[0].output == ["rlrun: error: x", "..."] and cmds[1].output == ["out"]
    assert [c.line for c in parse_commands(["rlrun --help   # groups", "", "rlrun x \\", "  y"])] == [
        "rlrun --help   # groups", "rlrun x y"]


def test_enough_commands_are_marked():
    assert 10 <= sum(len(b.commands) for b in BLOCKS) <= 30, [b.where for b in BLOCKS]


@pytest.mark.parametrize("block", BLOCKS, ids=[b.where for b in BLOCKS])
def test_marked_commands_run(block: Block, tmp_path):
    """Each block in its own temporary directory (runs write outputs/ there), commands in order."""
    for command in block.commands:
        done = subprocess.run(["bash", "-c", command.line], cwd=tmp_path, env=command_env(),
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
        output = done.stdout + done.stderr
        assert done.returncode == block.exit, (
            f"{block.where}: `{command.line}` exited {done.returncode}, expected {block.exit}:\n{output[-3000:]}")
        if block.match:
            for expected in command.output:
                if expected not in ("...", "…"):
                    assert expected in output, f"{block.where}: `{command.line}` did not print:\n{expected}\n" \
                                               f"it printed:\n{output[-3000:]}"
