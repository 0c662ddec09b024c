"""The README and the documentation site: the site builds without a warning, the README stays a
short start page, and every command the parser knows is documented."""

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO

from headstart.cli import build_parser

README = REPO / "README.md"
CLI_PAGE = REPO / "docs" / "cli.md"


def _commands() -> list[str]:
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return list(subparsers.choices)


def _code_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```[^\n]*\n(.*?)^```", markdown, flags=re.DOTALL | re.MULTILINE)


def _table_commands(markdown: str) -> set[str]:
    """The commands named in the first cell of a table row: | `train` | ... |."""
    return set(re.findall(r"^\|\s*\[?`(\w+)`", markdown, flags=re.MULTILINE))


def test_the_site_builds_strictly(tmp_path: Path):
    """A broken link, a page missing from the nav or a docstring the API reference cannot render
    is a warning, and --strict turns it into a failure."""
    # Material's banner about MkDocs 2 would bury the warning that failed the build.
    quiet = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                           cwd=REPO, env=quiet, capture_output=True, text=True, check=False)
    assert build.returncode == 0, build.stderr
    assert (tmp_path / "reference" / "model" / "index.html").read_text().count("ImageClassifier") > 1
    assert "Where a new thing goes" in (tmp_path / "architecture" / "index.html").read_text()


def test_the_readme_is_a_short_start_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 210
    first = _code_blocks(text)[0]
    assert "make demo" in first and "make test" in first


def test_the_readme_suggests_commands_that_run_after_make_demo():
    """`make demo` leaves headstart in .venv/bin, off the PATH: the README says so before any
    bare `headstart` command."""
    text = README.read_text()
    blocks = re.finditer(r"^```[^\n]*\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    first_bare = next(b for b in blocks if re.search(r"^headstart ", b.group(1), flags=re.MULTILINE))
    before = text[:first_bare.start()]
    assert ".venv/bin/headstart" in before and "source .venv/bin/activate" in before


def test_the_readme_quotes_no_shared_datasets():
    assert "shared/datasets" not in "\n".join(_code_blocks(README.read_text()))


def test_every_command_is_in_the_readme_table_and_the_cli_page():
    commands = set(_commands())
    assert commands <= _table_commands(README.read_text())
    cli_page = CLI_PAGE.read_text()
    assert commands <= _table_commands(cli_page)
    assert commands <= set(re.findall(r"^## (\w+)$", cli_page, flags=re.MULTILINE))
