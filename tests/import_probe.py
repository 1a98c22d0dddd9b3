"""What the server imports when only requirements.txt is installed, without building that venv.

Run as a child process (`python -m tests.import_probe`, JSON on stdin): it refuses to import any
top-level module whose distribution requirements.txt does not bring in (its pins and what they
declare, for this Python), as a venv made from requirements.txt alone would lack it, then imports
server.py, every module of handlers/, domain/ and storage/, and every module any of them imports
anywhere (also inside functions). A library that imports something it does not declare (as
mongomock_motor did with typing_extensions on Python 3.13) fails here with ModuleNotFoundError; an
optional import guarded by the library falls back as it would in production. It prints the modules
that were imported, as JSON.
"""
import ast
import importlib
import importlib.abc
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PRODUCT = ("server.py", "handlers", "domain", "storage")


def product_files():
    return [ROOT / "server.py"] + [path for package in PRODUCT[1:] for path in sorted((ROOT / package).rglob("*.py"))]


def module_name(path):
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def imported_names(path):
    """Every absolute import in a file, at any depth (lazy imports inside functions too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


class Uninstalled(importlib.abc.MetaPathFinder):
    """One of the interpreter's finders, blind to the refused modules and distributions: for them
    `import` raises ModuleNotFoundError, importlib.util.find_spec answers None and
    importlib.metadata finds nothing, as where they are not installed."""

    def __init__(self, finder, refused, refused_distributions):
        self.finder, self.refused, self.refused_distributions = finder, refused, refused_distributions

    def find_spec(self, fullname, path=None, target=None):
        if fullname in self.refused or not hasattr(self.finder, "find_spec"):
            return None
        return self.finder.find_spec(fullname, path, target)

    def find_distributions(self, *args, **kwargs):
        found = getattr(self.finder, "find_distributions", lambda *_, **__: [])(*args, **kwargs)
        return [each for each in found if canonical(each.metadata["Name"] or "") not in self.refused_distributions]

    def invalidate_caches(self):
        if hasattr(self.finder, "invalidate_caches"):
            self.finder.invalidate_caches()


def main():
    request = json.load(sys.stdin)
    before = set(sys.modules)
    refused, refused_distributions = set(request["refused"]), set(request["refused_distributions"])
    sys.meta_path[:] = [Uninstalled(finder, refused, refused_distributions) for finder in sys.meta_path]
    sys.path[:0] = request.get("extra_path", []) + [str(ROOT)]
    files = product_files()
    names = [module_name(path) for path in files] + sorted(set().union(*map(imported_names, files)))
    for name in names + request.get("extra_modules", []):
        importlib.import_module(name)
    json.dump(sorted(set(sys.modules) - before), sys.stdout)


if __name__ == "__main__":
    main()
