"""`hpf demo --volumes --prepare`: the compose federation's folders, one per party, and no party's key in another's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

REGIONS = ("shanghai", "hangzhou", "nanjing")


def _hpf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hpf.cli", *args], capture_output=True, text=True, timeout=120)


def _private_keys(folder: Path) -> set[str]:
    """Every file under ``folder`` that holds a private key, by what it holds, not by its name."""
    found = set()
    for path in folder.rglob("*"):
        if path.is_file() and b"PRIVATE KEY" in path.read_bytes():
            found.add(str(path.relative_to(folder)))
    return found


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("volumes")
    made = _hpf(
        "demo", "--volumes", "--prepare", "--nodes", "3", "--rows", "2000", "--base-port", "47101", "-d", str(root)
    )
    assert made.returncode == 0, made.stderr
    return root


def test_each_private_key_is_in_its_owners_folder_only(root: Path) -> None:
    assert _private_keys(root / "federation") == set()  # every party mounts it
    assert _private_keys(root / "ca") == {"ca.key"}
    assert _private_keys(root / "coordinator") == {"tls/coordinator.key"}
    for region in REGIONS:
        keys = _private_keys(root / "regions" / region)
        assert f"state/tls/{region}.key" in keys
        assert not any(other in key for key in keys for other in REGIONS if other != region), keys
        assert _private_keys(root / "regions" / region / "data") == set()
    people = _private_keys(root / "people")
    assert {f"pki/people/{p}.key" for p in ("caseworker", "bank", "auditor")} <= people
    assert not any("ca.key" in k or "coordinator" in k or "tls/" in k for k in people), people
    for path in (root / "ca" / "ca.key", root / "regions" / "shanghai" / "state" / "tls" / "shanghai.key"):
        assert os.stat(path).st_mode & 0o077 == 0, path


def test_each_partys_config_names_only_its_own_folders_and_fixed_loopback_ports(root: Path) -> None:
    config = root / "federation" / "config"
    for i, region in enumerate(REGIONS):
        node = yaml.safe_load((config / f"node-{region}.yaml").read_text())
        assert node["listen"] == f"127.0.0.1:{47102 + i}"
        assert node["metrics"] == {"listen": f"127.0.0.1:{47202 + i}"}  # loopback only
        paths = [node["state_dir"], *node["tls"].values(), *node["tables"].values()]
        mine = (str(root / "federation"), str(root / "regions" / region))
        assert all(p.startswith(mine) for p in paths), paths
    coordinator = yaml.safe_load((config / "coordinator.yaml").read_text())
    assert coordinator["listen"] == "127.0.0.1:47101"
    assert coordinator["tls"]["key"] == str(root / "coordinator" / "tls" / "coordinator.key")


def test_a_second_prepare_keeps_what_the_first_wrote(root: Path) -> None:
    catalog = (root / "federation" / "federation.yaml").read_bytes()
    again = _hpf("demo", "--volumes", "--prepare", "--nodes", "3", "--base-port", "47101", "-d", str(root))
    assert again.returncode == 0 and "already prepared" in again.stderr, again.stderr
    assert (root / "federation" / "federation.yaml").read_bytes() == catalog
    assert json.loads((root / "people" / "prepared.json").read_text())["rows"] == 2000


@pytest.mark.parametrize(
    "args",
    [
        ("--volumes",),
        ("--prepare",),
        ("--volumes", "--prepare", "--check"),
        ("--volumes", "--prepare"),  # no --base-port: the containers' configs name fixed ports
    ],
)
def test_volumes_takes_prepare_or_check_and_a_base_port(tmp_path: Path, args: tuple[str, ...]) -> None:
    refused = _hpf("demo", *args, "-d", str(tmp_path / "v"))
    assert refused.returncode == 2 and "DEMO_ARGS" in refused.stderr, refused.stderr


def test_check_of_a_folder_never_prepared_says_so(tmp_path: Path) -> None:
    refused = _hpf("demo", "--volumes", "--check", "--base-port", "47101", "-d", str(tmp_path))
    assert refused.returncode == 2 and "no federation was prepared" in refused.stderr, refused.stderr
