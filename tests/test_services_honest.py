"""services/ is user space: it may use only the public client library."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALLOWED = ("nubis.client", "nubis.errors", "nubis.services", "nubis.v1")


def imports_of(path: str):
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module or ""


def test_services_use_only_the_client_library():
    bad = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, "services")):
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(dirpath, f)
            for module in imports_of(path):
                if module == "nubis" or (module.startswith("nubis.") and not
                                         module.startswith(ALLOWED)):
                    bad.append(f"{path}: {module}")
    assert not bad, bad


def test_the_check_catches_a_kernel_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from nubis.core import Kernel\nimport nubis.client\n")
    assert list(imports_of(str(sample))) == ["nubis.core", "nubis.client"]
