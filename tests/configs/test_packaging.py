"""rlrun finds its configs when installed from a wheel, not only from the source tree (DESIGN.md
section 7: "installed apps that cannot find their configs"). A few seconds: the wheel is built
without build isolation and installed with --no-deps into a venv that borrows this venv's packages,
so nothing is downloaded."""
from __future__ import annotations

import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_under_rlrun_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "rlrun").rglob("__init__.py")}
    assert found | {"rlrun.conf"} == listed


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: the venv's setuptools builds it, nothing is downloaded.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(ROOT)], check=True, capture_output=True, text=True)
    return next(out.glob("rlrun-*.whl"))


def test_the_wheel_ships_every_config_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in (ROOT / "conf").rglob("*.yaml"):
        assert f"rlrun/conf/{path.relative_to(ROOT / 'conf').as_posix()}" in names
    assert "rlrun/conf/__init__.py" in names


def test_installed_wheel_composes_its_config_from_another_directory(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # The dependencies come from this venv's site-packages (a path entry; its .pth files, such as
    # the editable rlrun's finder, are not processed), rlrun itself from the wheel.
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                    "--no-index", "-q", str(wheel)], check=True, capture_output=True, text=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(python), "-c", "import rlrun.conf; print(rlrun.conf.__file__)"],
                           cwd=elsewhere, check=True, capture_output=True, text=True).stdout
    assert where.startswith(site), where
    result = subprocess.run([str(venv / "bin" / "rlrun"), "--cfg", "job", "debug=cpu"], cwd=elsewhere,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "algo:" in result.stdout and "steps: 2" in result.stdout
    assert not (elsewhere / "outputs").exists()  # --cfg runs nothing
    bad = subprocess.run([str(venv / "bin" / "rlrun"), "algo=nonexistent"], cwd=elsewhere,
                         capture_output=True, text=True, timeout=120)
    assert (bad.returncode, bad.stderr.count("\n")) == (2, 1), bad.stderr
