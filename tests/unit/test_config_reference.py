"""docs/configuration.md is the configuration models' own reference: a fresh render equals the committed file,
and every field of every file's model is in it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen_config_reference.py"
DOC = ROOT / "docs" / "configuration.md"


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_config_reference", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_reference_is_a_fresh_render() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_field_of_every_file_is_documented() -> None:
    doc = DOC.read_text(encoding="utf-8")
    generator = _generator()
    seen: set[type[BaseModel]] = set()
    queue = [model for _, _, model, _ in generator._files()]
    assert {m.__name__ for m in queue} == {"NodeConfig", "CoordinatorConfig", "ClientProfile", "Policy", "Catalog"}
    while queue:
        model = queue.pop()
        if model in seen:
            continue
        seen.add(model)
        assert f"### {model.__name__}\n" in doc, f"{model.__name__} has no section"
        for name, field in model.model_fields.items():
            assert f"| `{field.alias or name}` |" in doc, f"{model.__name__}.{name} is not in {DOC.name}"
            queue += list(generator._models_in(field.annotation))


def test_a_changed_model_is_caught(tmp_path: Path) -> None:
    """The check compares the whole file: a field documented differently fails it."""
    generator = _generator()
    fresh = generator.render()
    assert fresh == DOC.read_text(encoding="utf-8")
    assert generator.render().replace("| `node_id` |", "| `node` |") != fresh
