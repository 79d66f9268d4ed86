"""The built wheel installs one top-level package, ``hpf``, and ``hpf demo --once`` runs from it.

The wheel is built from this checkout and installed (without its dependencies) into a fresh virtual environment
that sees the dependencies of the one running the tests through a path file, but not its editable install of the
project: what runs is the wheel's copy, checked by where ``hpf`` is imported from.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("federation", "client", "node", "coordinator", "cli", "demo", "policies")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh environment with the wheel installed; returns its folder."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(work / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = work / "env"
    venv.create(env, with_pip=True)  # pip from the standard library's bundled wheel: no network
    # the dependencies, from the environment running the tests: a plain path, so its own path files (the
    # editable install of this project among them) are not read
    (_site(env) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (wheel,) = (work / "dist").glob("*.whl")
    subprocess.run(
        [env / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return env


def _site(env: Path) -> Path:
    (site,) = (env / "lib").glob("python3*/site-packages")
    return site


def test_the_wheel_puts_one_top_level_package_into_site_packages(installed: Path) -> None:
    site = _site(installed)
    (record,) = site.glob("hpf_federation-*.dist-info/RECORD")
    # every file but the console script (bin/hpf, recorded as a path up from site-packages)
    tops = {line.split("/")[0] for line in record.read_text().splitlines() if line and not line.startswith("../")}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"hpf"}
    assert not [f for f in FOLDERS if (site / f).exists()]
    assert sorted(p.name for p in (site / "hpf").iterdir() if p.name != "__pycache__") == sorted(FOLDERS)


def test_hpf_demo_once_runs_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    python = installed / "bin" / "python"
    where = subprocess.run(
        [
            python,
            "-c",
            "import json, hpf.cli.app as a, hpf.node.server as n; print(json.dumps([a.__file__, n.__file__]))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert all(Path(f).is_relative_to(_site(installed)) for f in json.loads(where.stdout))
    demo = subprocess.run(
        [installed / "bin" / "hpf", "demo", "--nodes", "3", "--rows", "2000", "--data", str(tmp_path / "d"), "--once"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    # the operator's exact queries and the caseworker's lookups, each checked by the demo against DuckDB
    assert demo.stdout.count("equals DuckDB over the pooled files") == 3 + 3
    assert "DIFFERS" not in demo.stdout and "NOT the" not in demo.stdout
