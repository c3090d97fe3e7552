"""keyhelper without site, as setup writes it: ``<venv python> -I -S <this file> [args]``.
It trusts its own site-packages only in the layout setup checked; else site decides
(tests/cache/test_launcher.py). Short: a script is compiled at every run, a module once."""
import sys

native = __import__("posix" if "posix" in sys.builtin_module_names else "nt")  # as os.name
venv = sys.executable.replace("\\", "/").rsplit("/", 2)[0]
major, minor = sys.version_info[:2]  # as keyhelper.base.files.venv_site_packages
lib = f"/lib/python{major}.{minor}" if native.__name__ == "posix" else "/Lib"
root = __file__.replace("\\", "/").rsplit("/", 2)[0]
try:  # this file's site-packages is the one of the venv whose python runs it, without site
    one, two = native.stat(root), native.stat(venv + lib + "/site-packages")
    lean = (sys.flags.no_site and (one.st_dev, one.st_ino) == (two.st_dev, two.st_ino)
            and native.stat(venv + "/pyvenv.cfg").st_mode & 0o170000 == 0o100000)
except (OSError, ValueError):
    lean = False
if lean:
    sys.path.append(root)  # last: nothing there may shadow the standard library
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
