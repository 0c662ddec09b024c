"""The shape of the code: declared layers, no import cycle, small modules, PyTorch kept where it belongs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "headstart"


def test_imports_follow_the_declared_layers():
    """pyproject.toml's import-linter contracts: the stages' layers (which forbid cycles between
    them) and the modules that never import PyTorch, timm or scikit-learn. In a child process:
    import-linter configures logging, which would silence the loggers of the tests that follow."""
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))")
    result = subprocess.run([sys.executable, "-c", code, str(REPO / "pyproject.toml")], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_source_module_grows_past_about_400_lines():
    sizes = {p.relative_to(PACKAGE).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
             for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 420} == {}


@pytest.mark.parametrize("module", ["headstart", "headstart.cli", "headstart.model", "headstart.training.fitting",
                                    "headstart.features.pipeline", "headstart.inspection", "headstart.device",
                                    "headstart.distributed"])
def test_the_cached_path_imports_no_pytorch_at_module_level(module: str):
    """A cached lightweight rerun and `headstart predict MODEL.onnx` start by importing these: PyTorch
    (about 5 s and 776 MB of RSS on 2 cores) must wait until a function needs it."""
    code = (f"import sys, {module}; "
            "print(sorted(m for m in ('torch', 'torchvision', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
