"""Every package states its public API in `__all__`; every listed name imports; the faces stay light."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PACKAGES = [
    "personvit", "personvit.config", "personvit.data", "personvit.engine", "personvit.evaluation",
    "personvit.losses", "personvit.models", "personvit.report", "personvit.viz",
    "shard_tools", "shard_tools.sources", "slurm", "slurm.local_cluster",
]  # fmt: skip


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_name_imports(name: str) -> None:
    package = importlib.import_module(name)
    assert package.__doc__ and package.__all__, f"{name}: no docstring or no __all__"
    for public in package.__all__:
        assert getattr(package, public) is not None, f"{name}.{public}"
    with pytest.raises(AttributeError):
        package.no_such_name  # noqa: B018


def test_the_light_faces_import_no_torch() -> None:
    light = ["personvit", "personvit.config", "personvit.data", "personvit.engine", "personvit.report",
             "personvit.viz", "shard_tools", "slurm"]  # fmt: skip
    code = f"import sys; [__import__(n) for n in {light!r}]; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
