"""The docs against the code: the option tables are generated (scripts/gen-docs) and must be
current, and every relative link in the docs must lead to a file and heading that exist."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from keyhelper_plugins.env import EnvBackend

from keyhelper import config
from keyhelper.backend import Option

ROOT = Path(__file__).resolve().parents[2]
GEN_DOCS = ROOT / "scripts" / "gen-docs"
STALE = "stale option table; run: .venv/bin/python scripts/gen-docs"


def gen_docs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(GEN_DOCS), *args], capture_output=True,
                          text=True, timeout=60, check=False)


def load_gen_docs() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("gen_docs", str(GEN_DOCS))
    spec = importlib.util.spec_from_loader("gen_docs", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.fixture
def docs_copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    return tmp_path


# --- generated tables ----------------------------------------------------------------------

def test_the_option_tables_match_the_code() -> None:
    run = gen_docs("--check")
    assert (run.returncode, run.stdout, run.stderr) == (0, "", "")


def test_a_stale_table_is_named_then_regenerated(docs_copy: Path) -> None:
    page = docs_copy / "docs" / "backends" / "vault.md"
    current = page.read_text()
    assert "| the field of the secret holding the key |" in current
    page.write_text(current.replace("the field of the secret holding the key", "an old help"))

    run = gen_docs("--check", "--root", str(docs_copy))
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == f"gen-docs: docs/backends/vault.md: {STALE}\n"
    assert "an old help" in page.read_text()  # --check writes nothing

    run = gen_docs("--root", str(docs_copy))
    assert (run.returncode, run.stdout, run.stderr) == (0, "updated docs/backends/vault.md\n", "")
    assert page.read_text() == current


def test_a_help_change_in_the_code_makes_the_docs_stale(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    module = load_gen_docs()
    monkeypatch.setitem(EnvBackend.options, "var",
                        Option(str, "KEYHELPER_API_KEY", help="a reworded help line"))
    monkeypatch.setitem(config.AUDIT_KEYS, "keep", Option(int, 7, help="rotated files kept"))
    assert module.main(["--check"]) == 1
    assert capsys.readouterr().err == (f"gen-docs: docs/backends/env.md: {STALE}\n"
                                       f"gen-docs: docs/configuration.md: {STALE}\n")


def test_a_backend_needs_its_page_and_markers(docs_copy: Path) -> None:
    (docs_copy / "docs" / "backends" / "jwt.md").unlink()
    env_page = docs_copy / "docs" / "backends" / "env.md"
    env_page.write_text(env_page.read_text().replace("<!-- /options:env -->", ""))
    run = gen_docs("--check", "--root", str(docs_copy))
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == (
        "gen-docs: docs/backends/env.md: needs one <!-- options:env --> ... "
        "<!-- /options:env --> pair\n"
        "gen-docs: docs/backends/jwt.md: missing (every table needs its page: ['jwt'])\n")


def test_the_type_column_shows_choices_and_bounds() -> None:
    module = load_gen_docs()
    assert module.type_text(Option(list, item_type=str)) == "a list of strings"
    assert module.type_text(Option(str, "kv", choices=("kv", "logical"))) == \
        '"kv" or "logical"'
    assert module.type_text(Option(int, choices=(1, 2, 3))) == "1, 2 or 3"
    assert module.type_text(Option((int, float), 0.2, min=0, max=1.0,
                                         max_exclusive=True)) == \
        "an integer or a number from 0 to below 1"
    assert module.type_text(Option(int, 5, min=1, max=100)) == "an integer from 1 to 100"
    assert module.type_text(Option(int, min=1024)) == "an integer at least 1024"
    assert module.type_text(Option(float, max=60.5)) == "a number at most 60.5"
    table = module.render("option", {"engine": Option(
        str, "kv", help='"kv" | "logical"', choices=("kv", "logical"))})
    assert table.splitlines()[2] == \
        '| `engine` | "kv" or "logical" | `"kv"` | no | "kv" \\| "logical" |'


# --- links ---------------------------------------------------------------------------------

DOCS = [ROOT / "README.md", ROOT / "SECURITY.md", ROOT / "CONTRIBUTING.md",
        *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def prose_lines(path: Path) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found: set[str] = set()
    for line in prose_lines(path):
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
        unique, n = slug, 0
        while unique in found:
            n += 1
            unique = f"{slug}-{n}"
        found.add(unique)
    return found


def test_the_doc_set_is_there() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in DOCS}
    assert {"docs/configuration.md", "docs/how-it-works.md", "docs/plugins.md",
            "docs/performance.md", "docs/portability.md", "docs/gateways.md", "docs/audit.md",
            *(f"docs/backends/{name}.md" for name in
              ("env", "file", "command", "vault", "jwt", "keyring"))} <= names


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_somewhere(doc: Path) -> None:
    broken = []
    for line in prose_lines(doc):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
                continue
            file_part, _, anchor = target.partition("#")
            path = (doc.parent / file_part).resolve() if file_part else doc
            if not path.exists():
                broken.append(f"{target}: no such file")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{target}: no heading #{anchor} in {path.name}")
    assert broken == []
