"""docs/CONTRIBUTING.md's package map names every module of the three packages (a new file adds its line)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("personvit", "shard_tools", "slurm")


def _map_sections() -> dict[str, str]:
    """The map's text per package and per `name/` sub-block ("personvit/config" -> its lines)."""
    text = (ROOT / "docs" / "CONTRIBUTING.md").read_text()
    block = text.split("## Package map", 1)[1].split("```", 2)[1]
    sections: dict[str, list[str]] = {}
    top = sub = None
    for line in block.splitlines():
        if m := re.match(r"^(\w+)/", line):
            top, sub = m.group(1), None
        elif top and (m := re.match(r"^  (\w+)/ ", line)):
            sub = f"{top}/{m.group(1)}"
        if top:
            sections.setdefault(sub or top, []).append(line)
            if sub:
                sections.setdefault(top, []).append(line)
    return {k: "\n".join(v) for k, v in sections.items()}


def test_every_module_is_on_the_map() -> None:
    sections = _map_sections()
    missing = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if path.name == "__init__.py" or "__pycache__" in rel.parts:
                continue
            where = f"{rel.parts[0]}/{rel.parts[1]}" if len(rel.parts) > 2 else rel.parts[0]
            text = sections.get(where, sections.get(rel.parts[0], ""))
            if not re.search(rf"(?<![\w.]){re.escape(path.name)}(?!\w)", text):
                missing.append(str(rel))
    assert not missing, f"modules missing from docs/CONTRIBUTING.md's package map: {missing}"
