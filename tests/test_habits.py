"""Habits of the source tree that check themselves (issue 17): names stay private to their module,
and callers ask a model's declared capabilities instead of probing it."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).parents[1] / "src" / "genlab"
MODULES = sorted(SOURCE.rglob("*.py"))


def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def test_the_tree_is_read():
    assert len(MODULES) > 50 and SOURCE / "models" / "base.py" in MODULES


def test_no_private_name_is_imported_across_modules():
    for path in MODULES:
        for node in ast.walk(parsed(path)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("genlab"):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                assert not private, f"{path.relative_to(SOURCE)} imports {private} from {node.module}"


def test_no_model_is_probed_for_what_it_can_do():
    """No hasattr, no inspect, no getattr with a default on a model or its config: capabilities are declared."""
    for path in MODULES:
        where = path.relative_to(SOURCE)
        for node in ast.walk(parsed(path)):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]
                assert "inspect" not in names, f"{where} imports inspect"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id != "hasattr", f"{where}:{node.lineno} calls hasattr"
                if node.func.id == "getattr" and len(node.args) == 3:
                    probed = ast.unparse(node.args[0])
                    assert "model" not in probed and "config" not in probed, f"{where}:{node.lineno} probes {probed}"
