"""The site-less launcher (keyhelper/launcher.py) that `setup claude-code` writes for a
regular install: a hit without `site`, a miss and every command with it, and each fallback
when the layout is not the one setup saw (never a wrong key, never a traceback).

A regular pip install in a venv of its own (tests/support/regular_install.py), built once.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cache_entry import entry_path, wait_for_refresh_lock
from countingcmd import counting_command
from helpers import Run
from hit_path import FORBIDDEN
from regular_install import ROOT, Install, copy_install, make_install

from keyhelper.base import records as kentry

# What a hit through the launcher loads beyond `python -I -S -c pass`: keyhelper's lean path
# (from its bytecode, by the launcher) and the sha256 primitive; not even `os`
# (keyhelper.base.oslite: posix or nt).
HIT_MODULES = sorted({"keyhelper", "keyhelper.console", "keyhelper.cachepolicy",
                      "keyhelper.base", "keyhelper.base.oslite", "keyhelper.base.files",
                      "keyhelper.base.records"})
# Run a launcher as Python runs it (its code object, __file__ and argv) and, at exit, list
# the keyhelper modules loaded and what each looks like.
LIST_MODULES = """
import atexit, json, marshal, posix, sys
launcher = sys.argv[1]
sys.argv = sys.argv[1:]
exit_now = posix._exit  # a hit leaves through it (keyhelper.console.served)
def show(code=None):
    found = {}
    for name, module in sys.modules.items():
        if name.split(".")[0] != "keyhelper":
            continue
        spec = module.__spec__
        found[name] = {"spec": [spec.name, spec.origin, spec.has_location],
                       "loader": type(module.__loader__).__name__, "file": module.__file__,
                       "cached": module.__cached__, "package": module.__package__,
                       "path": getattr(module, "__path__", None)}
    how = "atexit" if code is None else f"posix._exit({code})"
    sys.stderr.write(json.dumps({"modules": found, "exit": how}) + "\\n")
    sys.stderr.flush()
    if code is not None:
        exit_now(code)
atexit.register(show)
posix._exit = show
with open(launcher, "rb") as file:
    data = file.read()
code = marshal.loads(data[16:]) if launcher.endswith(".pyc") else compile(data, launcher, "exec")
exec(code, {"__name__": "__main__", "__file__": launcher})
"""


@pytest.fixture(scope="session")
def regular(tmp_path_factory: pytest.TempPathFactory) -> Install:
    return make_install(tmp_path_factory.mktemp("regular"))


def run(argv: list[str]) -> Run:
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60, check=False)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def imported(python: str, argv: list[str]) -> tuple[Run, set[str]]:
    """Run ``python -X importtime -I -S ARGV``: what it printed, and the modules it imported
    (-X importtime works without site; a sitecustomize hook would not)."""
    result = run([python, "-X", "importtime", "-I", "-S", *argv])
    names = {line.split("|")[-1].strip() for line in result.stderr.splitlines()
             if line.startswith("import time:") and line.count("|") == 2}
    names.discard("package")  # the header line
    return result, names


def loaded_modules(install: Install, launcher: Path, *args: str) -> tuple[Run, dict[str, dict]]:
    """Run ``launcher`` without site (as the command setup writes); the keyhelper modules
    it had loaded at exit (the last line of stderr, which it leaves out of the result). A
    hit leaves through posix._exit once its key is out: no tear-down of the interpreter."""
    result = run([install.python, "-I", "-S", "-c", LIST_MODULES, str(launcher), *args])
    *rest, last = result.stderr.splitlines()
    report = json.loads(last)
    assert report["exit"] == "posix._exit(0)"
    return Run(result.returncode, result.stdout, "".join(f"{r}\n" for r in rest)), report["modules"]


def test_setup_writes_the_launcher_for_a_regular_install(regular: Install,
                                                         isolated_env: Path) -> None:
    result = run([regular.script, "setup", "claude-code", "--profile", "work"])
    assert result.returncode == 0, result.stderr
    helper = shlex.join(regular.lean("--profile", "work"))
    settings = isolated_env / ".claude" / "settings.json"
    assert json.loads(settings.read_text()) == {"apiKeyHelper": helper}
    assert result.stdout == f"{settings}: apiKeyHelper = {helper}\n"


def test_a_hit_through_the_launcher_runs_without_site(regular: Install, write_config,
                                                      tmp_path: Path) -> None:
    source = counting_command(tmp_path)
    write_config(source.toml("vault"))
    # A miss: the launcher brings in site (click-free full path, plugins by entry point).
    miss, miss_modules = imported(regular.python, [str(regular.compiled), "-b", "vault"])
    assert (miss.returncode, miss.stdout, source.calls) == (0, source.key + "\n", 1)
    assert {"site", "keyhelper.resolver"} <= miss_modules
    # A hit: the standard library's cheapest modules and keyhelper's lean path, no site;
    # the lean path's modules are loaded from their bytecode, not through the import
    # system's finders (so -X importtime does not list them: below, what is loaded).
    _, baseline = imported(regular.python, ["-c", "pass"])
    hit, hit_modules = imported(regular.python, [str(regular.compiled), "-b", "vault"])
    assert (hit.returncode, hit.stdout, source.calls) == (0, source.key + "\n", 1)
    extra = hit_modules - baseline
    assert "site" not in extra
    assert not extra & FORBIDDEN, sorted(extra & FORBIDDEN)
    assert extra <= {"_sha256", "_sha2"}, sorted(extra)
    # Each module costs ~0.1 ms to load from its bytecode: the plain hit is these seven
    # (docs/performance.md#the-site-less-launcher).
    loaded, modules = loaded_modules(regular, regular.compiled, "-b", "vault")
    assert (loaded.returncode, loaded.stdout) == (0, source.key + "\n")
    assert sorted(modules) == HIT_MODULES
    # Claude Code runs the helper through sh -c: the written command, as written.
    helper = shlex.join(regular.lean("-b", "vault"))
    shell = run(["sh", "-c", helper])
    assert (shell.returncode, shell.stdout, shell.stderr, source.calls) == (
        0, source.key + "\n", "", 1)
    # The source form works as well (setup names it when no current .pyc is there).
    plain = run([regular.python, "-I", "-S", str(regular.launcher), "-b", "vault"])
    assert (plain.returncode, plain.stdout, plain.stderr) == (0, source.key + "\n", "")


def test_the_hit_modules_are_what_the_import_system_would_make(regular: Install,
                                                               write_config,
                                                               tmp_path: Path) -> None:
    """Modules loaded from their bytecode by the launcher look as imported ones do: spec,
    loader, file, cached, package path; a miss then imports the rest beside them."""
    source = counting_command(tmp_path)
    write_config(source.toml("vault"))
    assert run(regular.lean("-b", "vault")).stdout == source.key + "\n"
    result, modules = loaded_modules(regular, regular.compiled, "-b", "vault")
    assert result.returncode == 0
    tag = sys.implementation.cache_tag
    for name in HIT_MODULES:
        path = regular.site_packages / name.replace(".", "/")
        package = path.is_dir()
        source_file = path / "__init__.py" if package else path.with_suffix(".py")
        cached = source_file.parent / "__pycache__" / f"{source_file.stem}.{tag}.pyc"
        assert modules[name] == {
            "spec": [name, str(source_file), True],
            "loader": "SourceFileLoader", "file": str(source_file), "cached": str(cached),
            "package": name if package else name.rpartition(".")[0],
            "path": [str(path)] if package else None}, name


def changed_install(regular: Install, tmp_path: Path, write_config) -> tuple[Install, str]:
    """A copy of the regular install and a counting source configured as backend vault."""
    source = counting_command(tmp_path)
    write_config(source.toml("vault"))
    return copy_install(regular, tmp_path / "copy"), source.key


def test_a_module_changed_after_pip_compiled_it_runs_from_its_source(
        regular: Install, write_config, tmp_path: Path) -> None:
    """The bytecode is taken only when importlib's own check holds (mtime and size of the
    source): an edit of the same size with a new mtime runs the edited source."""
    copy, key = changed_install(regular, tmp_path, write_config)
    console = copy.site_packages / "keyhelper" / "console.py"
    text = console.read_text()
    line = 'sys.stderr.write("edited\\n")\n'
    first = text.splitlines()[0]  # the docstring's first line gives up the room
    assert first.startswith('"""') and len(first) > len(line) + 3
    edited = text.replace(first, first[:-len(line)], 1).replace(
        "import sys\n", "import sys\n" + line, 1)
    assert len(edited) == len(text) and edited != text
    mtime = console.stat().st_mtime
    console.write_text(edited)
    os.utime(console, (mtime + 60, mtime + 60))
    for _ in range(2):  # a miss (then the import system rewrites the .pyc), a hit
        result = run(copy.lean("-b", "vault"))
        assert (result.returncode, result.stdout, result.stderr) == (0, key + "\n",
                                                                     "edited\n")


def test_a_missing_or_cut_module_bytecode_is_imported_as_usual(
        regular: Install, write_config, tmp_path: Path) -> None:
    """pip --no-compile, or a .pyc cut short: the import system takes over from there."""
    copy, key = changed_install(regular, tmp_path, write_config)
    tag = sys.implementation.cache_tag
    assert run(copy.lean("-b", "vault")).stdout == key + "\n"
    (copy.site_packages / "keyhelper" / "base" / "__pycache__" / f"files.{tag}.pyc").unlink()
    cut = copy.site_packages / "keyhelper" / "base" / "__pycache__" / f"records.{tag}.pyc"
    cut.write_bytes(cut.read_bytes()[:10])
    for _ in range(2):
        result, modules = loaded_modules(copy, copy.compiled, "-b", "vault")
        assert (result.returncode, result.stdout) == (0, key + "\n")
        assert sorted(modules) == HIT_MODULES


def test_setup_names_the_source_launcher_when_its_bytecode_is_not_current(
        regular: Install, tmp_path: Path) -> None:
    copy = copy_install(regular, tmp_path / "copy")
    written = setup_helper(copy)
    assert written == shlex.join(copy.lean())
    os.utime(copy.launcher, (time.time() + 60, time.time() + 60))  # edited after pip ran
    assert setup_helper(copy) == shlex.join([copy.python, "-I", "-S", str(copy.launcher)])
    copy.launcher.touch()
    copy.compiled.unlink()  # pip --no-compile
    assert setup_helper(copy) == shlex.join([copy.python, "-I", "-S", str(copy.launcher)])


def setup_helper(install: Install) -> str:
    """The command `keyhelper setup claude-code` would write for ``install``."""
    code = "from keyhelper.setup_claude import installed_command; print(installed_command())"
    result = run([install.python, "-I", "-c", code])
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_commands_through_the_launcher_are_the_cli(regular: Install) -> None:
    version = run(regular.lean("--version"))
    assert (version.returncode, version.stdout) == (0, "keyhelper, version 0.1.0\n")
    bad = run(regular.lean("--bogus"))
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr.startswith("Usage: keyhelper [OPTIONS]")  # named as the console script


def test_a_launcher_outside_its_venv_takes_the_full_start_up(regular: Install, write_config,
                                                              tmp_path: Path) -> None:
    """A launcher that is not in the site-packages of the python running it (moved, copied,
    Python upgraded under the venv) does not trust its own directory: site first."""
    source = counting_command(tmp_path)
    write_config(source.toml("vault"))
    elsewhere = tmp_path / "python3.99" / "site-packages" / "keyhelper"
    elsewhere.mkdir(parents=True)
    shutil.copy(regular.launcher, elsewhere / "launcher.py")
    (elsewhere / "console.py").write_text("raise SystemExit('not this one')\n")
    for _ in range(2):  # a miss, then a hit: both from the venv's own keyhelper
        result, modules = imported(regular.python, [str(elsewhere / "launcher.py"), "-b",
                                                    "vault"])
        assert (result.returncode, result.stdout) == (0, source.key + "\n")
        assert "site" in modules
    assert source.calls == 1


def test_an_editable_checkout_falls_back_to_site(write_config, tmp_path: Path) -> None:
    """The test venv's editable install: setup keeps the console script (tests in
    cache/test_claude_loop.py), and the checkout's launcher still works, through site."""
    source = counting_command(tmp_path)
    write_config(source.toml("vault"))
    result = run([sys.executable, "-I", "-S", str(ROOT / "keyhelper" / "launcher.py"), "-b",
                  "vault"])
    assert (result.returncode, result.stdout, result.stderr) == (0, source.key + "\n", "")


def test_a_python_without_keyhelper_says_so(regular: Install, tmp_path: Path) -> None:
    """The venv was rebuilt without keyhelper, or another python runs the launcher."""
    empty = tmp_path / "empty"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(empty)], check=True)
    python = str(empty / "bin" / "python")
    result = run([python, "-I", "-S", str(regular.launcher), "-b", "vault"])
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (f"keyhelper: not installed for {python}; reinstall it, then run "
                             "`keyhelper setup claude-code` again\n")


def test_an_uninstalled_launcher_fails_without_a_key(regular: Install, tmp_path: Path) -> None:
    """keyhelper uninstalled: Python itself refuses the missing file, in one line."""
    result = run([regular.python, "-I", "-S", str(tmp_path / "keyhelper" / "launcher.py")])
    assert (result.returncode, result.stdout) == (2, "")
    assert len(result.stderr.splitlines()) == 1 and "can't open file" in result.stderr


def test_the_launcher_and_setup_agree_on_the_layout(regular: Install, tmp_path: Path) -> None:
    """Setup writes the launcher where keyhelper.base.files.venv_site_packages says (the
    launcher's own copy of that rule trusts it: no site on a hit, above); outside a venv
    there is no such place."""
    from keyhelper.base.files import venv_site_packages

    assert venv_site_packages(regular.python) == str(regular.site_packages)
    assert regular.launcher.parent.parent == regular.site_packages
    assert venv_site_packages(str(tmp_path / "bin" / "python")) is None


def test_a_hit_for_claude_code_through_the_launcher_stays_without_os(
        regular: Install, write_config, tmp_path: Path, cache_dir: Path) -> None:
    """Under Claude Code the hit also walks to its caller and writes a served marker, and in
    the refresh-ahead window it starts the refresh child: still no `os`, no site."""
    source = counting_command(tmp_path)
    write_config('chain = ["vault"]\n' + source.toml("vault"))
    first = run(regular.lean())
    assert (first.returncode, first.stdout, source.calls) == (0, source.key + "\n", 1)
    entry = kentry.parse_entry(entry_path().read_bytes())
    assert entry is not None
    entry.refresh = time.time() - 1  # in the refresh-ahead window
    entry_path().write_bytes(entry.serialize())
    _, baseline = imported(regular.python, ["-c", "pass"])
    claude = {"AI_AGENT": "claude-code_2.1.332_harness", "CLAUDE_CODE_ENTRYPOINT": "cli"}
    argv = [regular.python, "-X", "importtime", "-I", "-S", str(regular.launcher)]
    # Through a parent of its own, as Claude Code's shell: a caller the walk can name.
    proc = subprocess.run([sys.executable, "-S", "-c",
                           "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))",
                           *argv], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60, check=False, env={**os.environ, **claude})
    assert (proc.returncode, proc.stdout) == (0, source.key + "\n")
    names = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
             if line.startswith("import time:") and line.count("|") == 2} - baseline
    assert {"keyhelper.base.caller", "keyhelper.base.spawn"} <= names, sorted(names)
    assert not names & FORBIDDEN, sorted(names & FORBIDDEN)
    assert "site" not in names
    assert len(list(cache_dir.glob("*.served"))) == 1
    wait_for_refresh_lock()  # the refresh child ran, with site, and fetched once more
    assert source.calls == 2
