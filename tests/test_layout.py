"""The README's layout names every module of the service, and nothing that is not there."""

from __future__ import annotations

import re

from conftest import ROOT


def test_readme_layout_matches_the_tree():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("### Layout", 1)[1].split("```", 2)[1]
    listed = {line.split()[0] for line in block.splitlines() if line.strip()}
    for path in listed:
        assert (ROOT / path).exists(), f"README names {path}, which is not in the tree"
    modules = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "gpumetrics").rglob("*.py")
        if "migrations" not in path.parts and not (path.name == "__init__.py" and path.parent.name != "gpumetrics")
    }
    unlisted = {module for module in modules if module not in listed}
    assert not unlisted, f"modules missing from the README's layout: {sorted(unlisted)}"
    assert re.search(r"^config\.py ", block, re.MULTILINE) and "wsgi.py" in listed
