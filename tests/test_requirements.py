"""requirements.txt alone runs the server, on whichever Python runs the suite (.ci/run: 3.11 and 3.13).

The test venv holds more than requirements.txt (the test requirements and what they bring), so the
suite would not notice a module the server imports that only the test requirements install: on
Python 3.13 the server crashed with `ModuleNotFoundError: typing_extensions`, which mongomock_motor
imported without declaring it, while on 3.11 another package happened to declare it. The probe
(tests/import_probe.py) imports everything the server can import while refusing what
requirements.txt would not install, and every distribution it imports must be pinned there.
"""
import importlib.metadata
import json
import pathlib
import subprocess
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = pathlib.Path(__file__).resolve().parent.parent


def pins(text):
    """{canonical name: Requirement} for the lines of a requirements file that apply to this Python."""
    found = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate():
                found[canonicalize_name(requirement.name)] = requirement
    return found


def installed_by(requirements):
    """The distributions pip installs for these requirements: them and what they declare, recursively."""
    wanted, seen = [(name, set(req.extras)) for name, req in requirements.items()], {}
    while wanted:
        name, extras = wanted.pop()
        if extras <= seen.get(name, set()) and name in seen:
            continue
        seen[name] = seen.get(name, set()) | extras
        for line in importlib.metadata.distribution(name).requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or any(requirement.marker.evaluate({"extra": extra})
                                                 for extra in seen[name] | {""}):
                wanted.append((canonicalize_name(requirement.name), set(requirement.extras)))
    return set(seen)


def top_level_modules():
    """{top-level module: canonical names of the installed distributions that provide it}."""
    return {module: {canonicalize_name(name) for name in names}
            for module, names in importlib.metadata.packages_distributions().items()}


def probe(requirements, extra_modules=(), extra_path=()):
    """(return code, imported modules or the error) of tests/import_probe.py for these requirements."""
    allowed = installed_by(requirements)
    refused = [module for module, names in top_level_modules().items()
               if not names & allowed and module not in sys.stdlib_module_names]
    everything = {canonicalize_name(found.metadata["Name"]) for found in importlib.metadata.distributions()}
    request = {"refused": refused, "refused_distributions": sorted(everything - allowed),
               "extra_modules": list(extra_modules), "extra_path": list(extra_path)}
    done = subprocess.run([sys.executable, "-m", "tests.import_probe"], cwd=ROOT, input=json.dumps(request),
                          capture_output=True, text=True, timeout=120)
    return done.returncode, (json.loads(done.stdout) if done.returncode == 0 else done.stderr)


def test_requirements_txt_alone_gives_the_server_every_module_it_imports_each_pinned():
    requirements = pins((ROOT / "requirements.txt").read_text())
    status, imported = probe(requirements)
    assert status == 0, imported
    providers = top_level_modules()
    distributions = set().union(*(providers.get(name.split(".")[0], set()) for name in imported))
    unpinned = sorted(distributions - set(requirements))
    assert unpinned == [], f"imported by the server, not pinned in requirements.txt: {unpinned}"
    for name in distributions:
        requirement = requirements[name]
        [specifier] = requirement.specifier
        assert specifier.operator == "==", requirement
        assert importlib.metadata.version(name) == specifier.version, f"{name}: the venv has another version"


def test_the_probe_catches_a_library_importing_what_it_does_not_declare(tmp_path):
    # The typing_extensions mistake in small: `leaky` is required and declares nothing, but imports
    # `sneaky`, which this venv happens to have (as the test venv had typing_extensions).
    for name, code in (("leaky", "import sneaky\n"), ("sneaky", "")):
        (tmp_path / f"{name}.py").write_text(code)
        info = tmp_path / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (info / "top_level.txt").write_text(f"{name}\n")
    sys.path.insert(0, str(tmp_path))  # so that this process sees their metadata too
    try:
        requirements = {**pins((ROOT / "requirements.txt").read_text()), "leaky": Requirement("leaky==1.0")}
        status, error = probe(requirements, extra_modules=["leaky"], extra_path=[str(tmp_path)])
        assert status != 0 and "No module named 'sneaky'" in error
        requirements["sneaky"] = Requirement("sneaky==1.0")  # declared: then it is fine
        assert probe(requirements, extra_modules=["leaky"], extra_path=[str(tmp_path)])[0] == 0
    finally:
        sys.path.remove(str(tmp_path))
