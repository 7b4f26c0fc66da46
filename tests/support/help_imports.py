"""`--help` of an entry point, in a fresh interpreter, reporting whether torch got imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_PROBE = """
import importlib, json, sys
module, argv = sys.argv[1], json.loads(sys.argv[2])
main = importlib.import_module(module).main
try:
    code = main(argv)
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


def help_run(module: str, argv: list[str]) -> dict:
    """{"code", "torch", "stdout"} of `module.main(argv)` run in a new interpreter."""
    proc = subprocess.run([sys.executable, "-c", _PROBE, module, json.dumps(argv)], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    *shown, last = proc.stdout.strip().splitlines()
    return {**json.loads(last), "stdout": "\n".join(shown)}
