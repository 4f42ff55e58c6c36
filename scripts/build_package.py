"""Build the two FunctionGraph code packages: ``restore-event.zip`` and ``restore-http.zip``.

Usage (``make package`` runs this with the target runtime the Makefile states)::

    python scripts/build_package.py --python-version 3.10 --out build

Why a script and not ``pip install --target .``: the package must run on FunctionGraph's
CPython, not on the machine that builds it. So dependencies come from manylinux x86_64 wheels
for the target version only (``--only-binary=:all:``: nothing is compiled here), and pip's
answer is checked against the target's environment markers - pip evaluates markers such as
``python_version < "3.11"`` with the interpreter it runs on, so a build on 3.11 would leave out
``async-timeout`` (redis) and ``exceptiongroup`` (anyio) that 3.10 needs. Missing ones are
added and anything only the build machine needed is removed, until the set is exactly the
target's closure.

Each zip holds only what its function runs: the ``handler`` package without the development
modules in :data:`DEV_ONLY`, its dependencies without ``bin/`` scripts, and its entry file
(``index.py`` or ``bootstrap``), with every module's bytecode compiled by the target CPython
itself (:func:`bytecode_files`: a new FunctionGraph instance starts from the package as it was
uploaded, so without it every cold start would compile every module first; pip's own
``__pycache__`` is for the build machine's Python and is dropped). Entries are sorted and
carry a fixed timestamp, so the same inputs give the same bytes. ``MANIFEST.txt`` inside each
zip (and a copy beside it) lists every file with its size.

Each package is also left unpacked, in a folder of the same name (``build/restore-event/``):
that folder is what ``template.yaml`` deploys, because the Serverless Devs ``fgs`` component
reads ``codeUri`` as a folder and zips it itself. The zip stays for uploads in the console.
"""

from __future__ import annotations

import argparse
import email.parser
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

# Beside this file: the build runs as ``python scripts/build_package.py``.
from find_python import find_python
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTION = "obs-workflow-restore"
PLATFORM = "manylinux2014_x86_64"  # FunctionGraph runs x86_64 Linux with a glibc this old or newer
# FunctionGraph's Python runtimes (huawei-platform.md); older ones are below requires-python.
FUNCTIONGRAPH_PYTHONS = ("3.10", "3.12")

# Parts of the handler package that no function runs: the development tools (the local
# workflow API emulator and the demo that drives it) and the operator's command line (which
# starts them). Paths are relative to handler/; a directory excludes everything under it.
DEV_ONLY = ("cli/", "devtools/")
# Dependencies only the HTTP function imports (its web server); the event function never does.
HTTP_ONLY = frozenset({"functions-framework"})
# pyproject extras every function gets: RESTORE_STATE_URL=redis://… needs redis-py.
EXTRAS = ("redis",)

# The line of handler/bootstrap that names the runtime version; filled in here, so the deployed
# bootstrap starts the interpreter the dependencies were built for.
BOOTSTRAP_VERSION_LINE = 'target_python_version=""'
FIXED_TIME = (2020, 1, 1, 0, 0, 0)  # zip timestamps: identical input gives identical bytes


class BuildError(RuntimeError):
    """The package cannot be built as asked; the message says why."""


@dataclass(frozen=True)
class Artifact:
    """One function's zip: its name, its requirements and the entry files at its root."""

    name: str
    requirements: tuple[Requirement, ...]
    entry_files: dict[str, tuple[bytes, int]]  # path → (content, unix mode)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python-version", required=True, help="target CPython, e.g. 3.10")
    parser.add_argument("--out", type=Path, default=ROOT / "build", help="output directory")
    options = parser.parse_args(argv)
    try:
        for path in build(options.python_version, options.out):
            print(summary_line(path))
    except BuildError as exc:
        print(f"build_package: {exc}", file=sys.stderr)
        return 2
    return 0


def build(python_version: str, out: Path) -> list[Path]:
    """Build both zips into ``out``; returns their paths."""
    check_target(python_version)
    out.mkdir(parents=True, exist_ok=True)
    paths, pins = [], []
    # The HTTP function's dependencies are a superset of the event function's: resolve them
    # first and hold the event function to the same versions, so both run what was tested
    # (alone, the event set would take cloudevents 2.x, which functions-framework excludes).
    for artifact in sorted(artifacts(python_version), key=lambda a: a.name != "restore-http"):
        with tempfile.TemporaryDirectory(prefix=f"{artifact.name}-") as staging:
            site = Path(staging) / "site"
            paths.append(build_one(artifact, python_version, site, out, pins))
            if not pins:
                pins = [f"{d.name}=={d.version}" for d in installed_distributions(site).values()]
    return sorted(paths)


def check_target(python_version: str) -> None:
    """Refuse a version the code does not support or FunctionGraph does not run."""
    floor = requires_python()
    if not floor.contains(python_version + ".0", prereleases=True):
        raise BuildError(f"Python {python_version} is outside requires-python {floor}")
    if python_version not in FUNCTIONGRAPH_PYTHONS:
        runtimes = ", ".join(f"Python{v}" for v in FUNCTIONGRAPH_PYTHONS)
        raise BuildError(f"FunctionGraph has no Python{python_version} runtime (use {runtimes})")


def requires_python() -> SpecifierSet:
    return SpecifierSet(importlib.metadata.metadata(DISTRIBUTION)["Requires-Python"] or "")


def artifacts(python_version: str) -> list[Artifact]:
    """The two functions: requirements from the project's own metadata, split by need."""
    core, extras = [], []
    for line in importlib.metadata.requires(DISTRIBUTION) or []:
        requirement = Requirement(line)
        if requirement.marker is None:
            core.append(requirement)
        elif any(requirement.marker.evaluate({"extra": extra}) for extra in EXTRAS):
            extras.append(Requirement(f"{requirement.name}{requirement.specifier}"))
    event = [r for r in core if canonicalize_name(r.name) not in HTTP_ONLY] + extras
    index = b"from handler.main import handler  # noqa: F401 - FunctionGraph entry index.handler\n"
    return [
        Artifact("restore-event", tuple(event), {"index.py": (index, 0o644)}),
        Artifact(
            "restore-http", tuple(core + extras), {"bootstrap": (bootstrap(python_version), 0o755)}
        ),
    ]


def bootstrap(python_version: str) -> bytes:
    text = (ROOT / "handler" / "bootstrap").read_text()
    if text.count(BOOTSTRAP_VERSION_LINE) != 1:
        raise BuildError(f"handler/bootstrap must hold the line {BOOTSTRAP_VERSION_LINE!r} once")
    return text.replace(
        BOOTSTRAP_VERSION_LINE, f'target_python_version="{python_version}"'
    ).encode()


def build_one(
    artifact: Artifact, python_version: str, site: Path, out: Path, pins: list[str]
) -> Path:
    """Install ``artifact``'s dependencies into ``site`` (a scratch directory), then zip."""
    install_dependencies(artifact.requirements, python_version, site, pins)
    files = dependency_files(site)
    files.update(handler_files())
    files.update(artifact.entry_files)
    files.update(bytecode_files(files, python_version))
    manifest = manifest_text(artifact, python_version, files, site)
    files["MANIFEST.txt"] = (manifest.encode(), 0o644)
    path = out / f"{artifact.name}.zip"
    write_zip(path, files)
    write_folder(out / artifact.name, files)
    (out / f"{artifact.name}.MANIFEST.txt").write_text(
        manifest + f"# {path.name}: {path.stat().st_size} bytes compressed\n"
    )
    return path


# ------------------------------------------------------------------------------ dependencies


def install_dependencies(
    requirements: tuple[Requirement, ...], version: str, target: Path, pins: list[str]
) -> None:
    """pip-install wheels for the target into ``target`` until its closure is exactly right.

    ``pins`` (``name==version`` lines) constrain the versions pip may choose.
    """
    wanted = {canonicalize_name(r.name): r for r in requirements}
    for _ in range(5):  # each round adds what pip's host-side marker evaluation missed
        if target.exists():
            shutil.rmtree(target)
        pip_install([str(r) for r in wanted.values()], version, target, pins)
        installed = installed_distributions(target)
        missing = unmet_requirements(requirements, installed, version)
        if not missing:
            remove_unneeded(requirements, installed, version, target)
            return
        for requirement in missing:
            # Without its marker: pip would evaluate it on the build machine again.
            wanted.setdefault(canonicalize_name(requirement.name), without_marker(requirement))
    raise BuildError(f"dependencies for Python {version} did not settle: {sorted(wanted)}")


def without_marker(requirement: Requirement) -> Requirement:
    extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
    return Requirement(f"{requirement.name}{extras}{requirement.specifier}")


def pip_install(requirements: list[str], version: str, target: Path, pins: list[str]) -> None:
    constraints = target.parent / "constraints.txt"
    constraints.write_text("".join(f"{pin}\n" for pin in pins))
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--no-compile", "--only-binary=:all:", "--platform", PLATFORM,
        "--python-version", version, "--implementation", "cp", "--target", str(target),
        "--constraint", str(constraints), *requirements,
    ]  # fmt: skip
    # S603: a fixed pip command; the requirements come from this project's own metadata.
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise BuildError(f"pip could not install {requirements}:\n{result.stderr[-3000:]}")


@dataclass(frozen=True)
class Distribution:
    name: str
    version: str
    requires: tuple[Requirement, ...]
    dist_info: Path


def installed_distributions(target: Path) -> dict[str, Distribution]:
    found = {}
    for metadata_file in target.glob("*.dist-info/METADATA"):
        metadata = email.parser.Parser().parsestr(metadata_file.read_text(encoding="utf-8"))
        name = canonicalize_name(metadata["Name"])
        requires = tuple(Requirement(line) for line in metadata.get_all("Requires-Dist") or [])
        found[name] = Distribution(name, metadata["Version"], requires, metadata_file.parent)
    return found


def marker_environment(version: str, extra: str = "") -> dict[str, str]:
    """Environment markers of FunctionGraph's CPython ``version`` on x86_64 Linux."""
    return {
        "python_version": version,
        "python_full_version": f"{version}.0",
        "implementation_name": "cpython",
        "implementation_version": f"{version}.0",
        "platform_python_implementation": "CPython",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "sys_platform": "linux",
        "os_name": "posix",
        "extra": extra,
    }


def applies(requirement: Requirement, version: str, extras: set[str]) -> bool:
    marker: Marker | None = requirement.marker
    if marker is None:
        return True
    return any(marker.evaluate(marker_environment(version, e)) for e in {"", *extras})


def closure(
    requirements: tuple[Requirement, ...], installed: dict[str, Distribution], version: str
) -> tuple[set[str], list[Requirement]]:
    """Names the target needs (walking installed metadata) and requirements not satisfied."""
    needed: set[str] = set()
    missing: list[Requirement] = []
    queue = [(r, set(r.extras)) for r in requirements]
    seen: set[tuple[str, frozenset[str]]] = set()
    while queue:
        requirement, extras = queue.pop()
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(extras))
        if key in seen:
            continue
        seen.add(key)
        distribution = installed.get(name)
        if distribution is None or not requirement.specifier.contains(
            distribution.version, prereleases=True
        ):
            missing.append(requirement)
            continue
        needed.add(name)
        for child in distribution.requires:
            if applies(child, version, extras):
                queue.append((child, set(child.extras)))
    return needed, missing


def unmet_requirements(
    requirements: tuple[Requirement, ...], installed: dict[str, Distribution], version: str
) -> list[Requirement]:
    return closure(requirements, installed, version)[1]


def remove_unneeded(
    requirements: tuple[Requirement, ...],
    installed: dict[str, Distribution],
    version: str,
    target: Path,
) -> None:
    """Delete distributions only the build machine's markers asked for (its RECORD lists them)."""
    needed, _ = closure(requirements, installed, version)
    for name, distribution in installed.items():
        if name in needed:
            continue
        for line in (distribution.dist_info / "RECORD").read_text().splitlines():
            path = (target / line.split(",")[0]).resolve()
            if path.is_relative_to(target.resolve()) and path.is_file():
                path.unlink()
        shutil.rmtree(distribution.dist_info, ignore_errors=True)


def dependency_files(target: Path) -> dict[str, tuple[bytes, int]]:
    """Every installed file except console scripts and bytecode (built for the wrong Python)."""
    files = {}
    for path in sorted(target.rglob("*")):
        relative = path.relative_to(target).as_posix()
        if not path.is_file() or relative.startswith("bin/") or is_bytecode(relative):
            continue
        files[relative] = (path.read_bytes(), 0o644)
    return files


# --------------------------------------------------------------------------- handler package


def handler_files() -> dict[str, tuple[bytes, int]]:
    """The handler package's modules, without the development-only ones."""
    package = ROOT / "handler"
    files = {}
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        if is_bytecode(relative) or is_dev_only(relative):
            continue
        files[f"handler/{relative}"] = (path.read_bytes(), 0o644)
    return files


def is_dev_only(relative_to_handler: str) -> bool:
    return any(
        relative_to_handler.startswith(entry)
        if entry.endswith("/")
        else relative_to_handler == entry
        for entry in DEV_ONLY
    )


def is_bytecode(relative: str) -> bool:
    return "__pycache__/" in f"/{relative}" or relative.endswith((".pyc", ".pyo"))


# ---------------------------------------------------------------------------------- bytecode

# Run by the target CPython: compile each module named on stdin (relative to argv[1]) into its
# __pycache__, as a checked-hash pyc: the interpreter compares it with its source's hash at
# import, so an edited source (the console's code editor) is compiled again, never shadowed by
# stale bytecode, and the bytes depend only on the source (no timestamps). A module that does
# not compile for the target (a Python 2 leftover in a dependency) is skipped: it could not be
# imported there either.
COMPILE_SCRIPT = """
import importlib.util, py_compile, sys
root = sys.argv[1]
for relative in sys.stdin.read().split():
    source = f"{root}/{relative}"
    try:
        py_compile.compile(source, importlib.util.cache_from_source(source), relative, True,
                           invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
    except py_compile.PyCompileError:
        pass
"""
COMPILE_TIMEOUT = 300.0


def bytecode_files(
    files: dict[str, tuple[bytes, int]], python_version: str
) -> dict[str, tuple[bytes, int]]:
    """``__pycache__/<module>.cpython-<version>.pyc`` for every ``.py`` in ``files``, compiled
    by CPython ``python_version`` (bytecode is specific to one minor version).

    Why: FunctionGraph unpacks the package afresh for every new instance, so whatever an
    instance compiles is lost to the next cold start; without bytecode in the package each one
    compiles ours and ``requests``' modules (≈175 for the event function) before the first
    event - several times the whole import from bytecode (benchmarks/PROFILE.md).
    """
    python = find_python(python_version)
    if python is None:
        raise BuildError(
            f"no CPython {python_version} on this machine to compile the package's bytecode "
            f"with (pyenv install {python_version}; scripts/find_python.py says where it looks)"
        )
    sources = sorted(name for name in files if name.endswith(".py"))
    with tempfile.TemporaryDirectory(prefix="bytecode-") as staging:
        root = Path(staging)
        for name in sources:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(files[name][0])
        result = subprocess.run(  # noqa: S603 - the target interpreter, a constant script
            [python, "-c", COMPILE_SCRIPT, str(root)],
            # A fixed hash seed: set constants are written in hash order, so a random seed
            # would make the same source compile to different bytes from build to build.
            env={**os.environ, "PYTHONHASHSEED": "0"},
            input="\n".join(sources),
            capture_output=True,
            text=True,
            timeout=COMPILE_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            raise BuildError(f"compiling the bytecode with {python} failed:\n{result.stderr}")
        return {
            path.relative_to(root).as_posix(): (path.read_bytes(), 0o644)
            for path in sorted(root.rglob("*.pyc"))
        }


# ---------------------------------------------------------------------------- zip and report


def manifest_text(
    artifact: Artifact, version: str, files: dict[str, tuple[bytes, int]], site: Path
) -> str:
    pins = sorted(f"{d.name}=={d.version}" for d in installed_distributions(site).values())
    total = sum(len(content) for content, _ in files.values())
    lines = [
        f"# {artifact.name}.zip for FunctionGraph runtime Python{version}",
        f"# {DISTRIBUTION} {importlib.metadata.version(DISTRIBUTION)}",
        f"# wheels: CPython {version}, {PLATFORM}",
        f"# dependencies: {' '.join(pins)}",
        f"# {len(files)} files (this manifest not counted), {total} bytes unpacked",
        "# size\tpath",
    ]
    lines += [f"{len(content)}\t{path}" for path, (content, _) in sorted(files.items())]
    return "\n".join(lines) + "\n"


def write_zip(path: Path, files: dict[str, tuple[bytes, int]]) -> None:
    partial = path.with_suffix(".zip.partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name in sorted(files):
            content, mode = files[name]
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.external_attr = (0o100000 | mode) << 16  # regular file with its unix mode
            info.create_system = 3  # unix, so unzip and FunctionGraph honour the mode
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content)
    os.replace(partial, path)


def write_folder(folder: Path, files: dict[str, tuple[bytes, int]]) -> None:
    """The package unpacked, exactly the zip's files and modes, replacing an older build.

    Written beside the final name and swapped in, so an interrupted build leaves no folder
    that mixes two builds' files (a deploy would zip whatever it finds there).
    """
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for name in sorted(files):
        content, mode = files[name]
        target = partial / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        os.chmod(target, mode)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)


def summary_line(path: Path) -> str:
    with zipfile.ZipFile(path) as archive:
        entries = archive.infolist()
    unpacked = sum(entry.file_size for entry in entries)
    return (
        f"{path}: {path.stat().st_size / 1e6:.2f} MB zipped, {unpacked / 1e6:.2f} MB unpacked, "
        f"{len(entries)} files (manifest: {path.with_suffix('').name}.MANIFEST.txt; "
        f"unpacked for template.yaml in {path.with_suffix('')}/)"
    )


if __name__ == "__main__":
    sys.exit(main())
