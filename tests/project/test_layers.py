"""The architecture, held by a test (issue 11): imports point one way, down the layers; no
import cycle, lazy imports included; the hit path imports only the standard library's
cheapest modules; built-in backends use only the public plugin API.

Layers, bottom up (docs/architecture.md):
  0  keyhelper.base.*            paths, records, private files, entries, lock, audit, spawn
  1  contract                    backend, errors, redact: what plugins see
  2  the hit and the policy      hit, cachepolicy
  3  the resolver                config, policy, registry, chain, stores, oskeyring, resolver,
                                 testing
  4  entry points and commands   console, cli, app, refresh, diagnose, jwks, keystore,
                                 setup_claude, gateway (LiteLLM's custom_auth)
Imports under ``if TYPE_CHECKING:`` do not run, and are left out.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"keyhelper": ROOT / "keyhelper", "keyhelper_plugins": ROOT / "plugins"}

LAYERS = {
    "contract": 1, "cachepolicy": 2,
    "configfile": 3, "config": 3, "policy": 3, "registry": 3, "chain": 3, "stores": 3,
    "oskeyring": 3,
    "resolver": 3, "testing": 3,
    "console": 4, "cli": 4, "app": 4, "refresh": 4, "diagnose": 4, "jwks": 4, "keystore": 4,
    "setup_claude": 4, "signin": 4, "launcher": 4, "__main__": 4, "gateway": 4,
}
CONTRACT = {"keyhelper.backend", "keyhelper.errors", "keyhelper.redact"}
PLUGIN_API = {*CONTRACT, "keyhelper.oskeyring"}
# What the hit path may import at all (module level or lazily): builtins and C modules that
# cost next to nothing, and itself.
HIT_PATH = ("keyhelper.console", "keyhelper.cachepolicy")
CHEAP_STDLIB = {"os", "sys", "time", "_sha256", "_sha2", "hashlib", "fcntl", "msvcrt",
                "_socket", "pwd", "__future__"}


def modules() -> dict[str, Path]:
    found = {}
    for package, directory in PACKAGES.items():
        for path in directory.rglob("*.py"):
            parts = path.relative_to(directory).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def layer(module: str) -> int:
    if module.startswith("keyhelper_plugins"):
        return 5  # backends sit beside the entry points, on the public API only
    if module == "keyhelper" or module.startswith("keyhelper.base"):
        return 0
    if module in CONTRACT:
        return 1
    name = module.split(".")[1]
    return LAYERS[name]


def imports(path: Path, *, lazy: bool = True) -> Iterator[tuple[str, int, bool]]:
    """(module imported, line, whether at module level) for every import that runs."""
    tree = ast.parse(path.read_text())
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(n) for child in node.body for n in ast.walk(child))
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, id(node) in top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno, id(node) in top
            for alias in node.names:  # "from keyhelper.base import entry" imports a module
                yield f"{node.module}.{alias.name}", node.lineno, id(node) in top
        elif isinstance(node, ast.ImportFrom) and node.level:  # relative: in plugins
            base = path.parent.name if path.parent.name != "plugins" else "keyhelper_plugins"
            yield f"{base}.{node.module}", node.lineno, id(node) in top


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {}
    for module, path in known.items():
        edges[module] = {target for target, _, _ in imports(path)
                         if target in known and target != module}
    return edges


def test_every_module_has_a_layer() -> None:
    for module in modules():
        assert layer(module) >= 0, module


def test_imports_point_down_the_layers() -> None:
    upward = []
    for module, targets in graph().items():
        for target in targets:
            if target.startswith("keyhelper.") and layer(target) > layer(module):
                if module.startswith("keyhelper_plugins"):
                    continue
                upward.append(f"{module} (layer {layer(module)}) imports {target} "
                              f"(layer {layer(target)})")
    assert upward == []


def test_no_import_cycle_lazy_imports_included() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if target == module.rsplit(".", 1)[0] or module.startswith(target + "."):
                continue  # a submodule importing its own package's __init__
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target):], target])
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []


@pytest.mark.parametrize("module", sorted(m for m in modules() if m.startswith(HIT_PATH)
                                          or m.startswith("keyhelper.base")))
def test_the_hit_path_imports_only_cheap_modules(module: str) -> None:
    """keyhelper.base, the hit, the cache policy and the console script: nothing but the
    cheapest standard modules and each other at module level (a lazy import is allowed
    where the hit never goes, e.g. json in the audit log's reader for doctor)."""
    heavy = []
    for target, line, at_top in imports(modules()[module]):
        root = target.split(".")[0]
        if root in ("keyhelper",):
            ok = target.startswith(("keyhelper.base", *HIT_PATH)) or target == "keyhelper"
            if not ok and at_top:
                heavy.append(f"{target} (line {line})")
            continue
        if at_top and root not in CHEAP_STDLIB:
            heavy.append(f"{target} (line {line})")
    assert heavy == []


def test_built_in_backends_use_only_the_public_plugin_api() -> None:
    private = []
    for module, path in modules().items():
        if not module.startswith("keyhelper_plugins"):
            continue
        for target, line, _ in imports(path):
            if target.startswith("keyhelper.") and target not in PLUGIN_API and not any(
                    target.startswith(api + ".") for api in PLUGIN_API):
                private.append(f"{module}:{line} imports {target}")
    assert private == []
