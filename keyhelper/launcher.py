"""keyhelper without site, as setup writes it: ``<venv python> -I -S <this file> [args]``,
where <this file> is pip's compiled copy of it when current (a script is compiled at every
run; a .pyc is run as it is). It trusts its own site-packages only in the layout setup
checked; else site decides (tests/cache/test_launcher.py)."""
import sys

native = __import__("posix" if "posix" in sys.builtin_module_names else "nt")  # as os.name
venv = sys.executable.replace("\\", "/").rsplit("/", 2)[0]
major, minor = sys.version_info[:2]  # as keyhelper.base.files.venv_site_packages
lib = f"/lib/python{major}.{minor}" if native.__name__ == "posix" else "/Lib"
here = __file__.replace("\\", "/")  # keyhelper/launcher.py, or pip's compiled copy of it
root = here.rsplit("/", 3 if here.endswith(".pyc") else 2)[0]
# The hit's modules, parents first: read from the .pyc pip wrote when importlib's own check
# holds (the source's mtime and size), without the path finders, which cost more than the
# modules' code. Anything off: the import system takes over from that module on.
HIT = ("keyhelper/__init__", "keyhelper/base/__init__", "keyhelper/base/oslite",
       "keyhelper/base/files", "keyhelper/base/records", "keyhelper/cachepolicy/__init__",
       "keyhelper/console")


def preload() -> None:
    import marshal
    from _frozen_importlib import module_from_spec
    from _frozen_importlib_external import MAGIC_NUMBER, spec_from_file_location

    tag = sys.implementation.cache_tag
    for file in HIT:
        name, package = file.removesuffix("/__init__").replace("/", "."), file[-8:] == "__init__"
        folder, _, stem = f"{root}/{file}".rpartition("/")
        path = f"{folder}/{stem}.py"
        try:
            with open(f"{folder}/__pycache__/{stem}.{tag}.pyc", "rb") as pyc:
                data, source = pyc.read(), native.stat(path)
            stamp = int(source.st_mtime) & 0xFFFFFFFF | (source.st_size & 0xFFFFFFFF) << 32
            if data[:16] != MAGIC_NUMBER + bytes(4) + stamp.to_bytes(8, "little"):
                return  # stale, or hash-based
            code = marshal.loads(memoryview(data)[16:])  # noqa: S302 - as importlib does
        except (OSError, ValueError, EOFError, TypeError):
            return
        spec = spec_from_file_location(name, path,
                                       submodule_search_locations=[folder] if package else None)
        if spec is None:  # pragma: no cover - a .py path always has a spec
            return
        module = sys.modules[name] = module_from_spec(spec)
        try:
            exec(code, module.__dict__)  # noqa: S102 - the import system's step, done here
        except Exception:  # imported again, it fails as it fails
            del sys.modules[name]
            return
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)


try:  # this file's site-packages is the one of the venv whose python runs it, without site
    one, two = native.stat(root), native.stat(venv + lib + "/site-packages")
    lean = (sys.flags.no_site and (one.st_dev, one.st_ino) == (two.st_dev, two.st_ino)
            and native.stat(venv + "/pyvenv.cfg").st_mode & 0o170000 == 0o100000)
except (OSError, ValueError):
    lean = False
if lean:
    sys.path.append(root)  # last: nothing there may shadow the standard library
    preload()
elif sys.flags.no_site:
    import site

    site.main()
try:
    from keyhelper.console import launch
except ImportError:
    sys.stderr.write(f"keyhelper: not installed for {sys.executable}; reinstall it, "
                     "then run `keyhelper setup claude-code` again\n")
    sys.exit(2)
launch(site_loaded=not lean)
