"""House rule 1: rlrun/core imports only the standard library, numpy, torch and rlrun.types."""
import ast
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "rlrun" / "core"
ALLOWED_THIRD_PARTY = {"numpy", "torch"}
ALLOWED_RLRUN = ("rlrun.types", "rlrun.core")


def _imports(path: Path):
    """Absolute module names imported by ``path`` (relative imports resolved against its package)."""
    package = ["rlrun", "core", *path.relative_to(CORE).parent.parts]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                yield node.module
            else:
                base = package[: len(package) - node.level + 1]
                yield ".".join(base + ([node.module] if node.module else []))


def _allowed(module: str) -> bool:
    top = module.split(".")[0]
    if top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY:
        return True
    return any(module == name or module.startswith(name + ".") for name in ALLOWED_RLRUN)


def test_core_imports_only_stdlib_numpy_torch():
    files = sorted(CORE.rglob("*.py"))
    assert len(files) >= 6
    bad = [f"{path.relative_to(CORE)}: {module}" for path in files for module in _imports(path)
           if not _allowed(module)]
    assert not bad, "rlrun/core must import only stdlib, numpy, torch, rlrun.types: " + ", ".join(bad)


def test_checker_rejects_other_imports():
    assert not _allowed("omegaconf") and not _allowed("rlrun.engines.model") and not _allowed("hydra.utils")
    assert _allowed("collections.abc") and _allowed("torch.nn") and _allowed("rlrun.types")
