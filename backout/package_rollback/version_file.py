"""Finding the file(s) that hold a package's version, and bumping it there.

Looked at, in the tree of the good version's tag: `pyproject.toml` (`[project] version`, Poetry's
`[tool.poetry] version`, or a dynamic version read from a file or a module attribute), `setup.cfg`
(`[metadata] version`, also `attr:`/`file:`), and `__version__` in a package's `__init__.py`,
`_version.py`, `__about__.py` or `version.py`. Every file that holds the good version is bumped, so
they keep agreeing. A version taken from the git tag itself (setuptools-scm, hatch-vcs, PDM's scm
source, poetry-dynamic-versioning) needs no file: the new tag is the bump.
"""

from __future__ import annotations

import configparser
import re
import tomllib
from dataclasses import dataclass
from typing import Any, Callable

from packaging.version import InvalidVersion, Version

from backout.errors import BadInput

Reader = Callable[[str], "str | None"]  # path -> text, None when absent
Lister = Callable[[str], "dict[str, bool] | None"]  # directory -> {name: is a directory}, None when absent

MODULE_FILES = ("__init__.py", "_version.py", "__about__.py", "version.py")
_TAG_VERSIONED_BACKENDS = ("setuptools_scm", "setuptools-scm", "hatch-vcs", "pdm-backend-scm", "poetry-dynamic-versioning")

_PY_ASSIGN = re.compile(
    r"^(?P<head>(?:__version__|version|VERSION)\s*(?::\s*str\s*)?=\s*(?:(?:__version__|version)\s*=\s*)?)"
    r"(?P<q>['\"])(?P<value>[^'\"]+)(?P=q)", re.M)
_TOML_VERSION = re.compile(r"^(?P<head>\s*version\s*=\s*)(?P<q>['\"])(?P<value>[^'\"]+)(?P=q)", re.M)
_CFG_VERSION = re.compile(r"^(?P<head>version\s*[=:]\s*)(?P<q>)(?P<value>[^\s#;]+)\s*$", re.M)
_PLAIN = re.compile(r"^(?P<head>\s*)(?P<q>)(?P<value>\S+)\s*$")


@dataclass(frozen=True)
class VersionFile:
    path: str
    kind: str  # "pyproject" ([project]), "poetry", "setup.cfg", "python", "text"


@dataclass(frozen=True)
class Detected:
    files: tuple[VersionFile, ...]
    project_name: str | None
    from_tag: bool  # the version comes from the git tag; no file to bump


def detect(read: Reader, listdir: Lister, good: Version, *, given: str | None = None, where: str) -> Detected:
    """Which files hold version `good` in the tree `where` (a tag name, for messages)."""
    pyproject = _toml(read, "pyproject.toml", where)
    setup_cfg = _cfg(read("setup.cfg"), where)
    name = _name(pyproject, setup_cfg)
    if given:
        text = read(given)
        if text is None:
            raise BadInput(f"--version-file {given} is not in the repository at {where}; give its path from the "
                           "repository root")
        kind = _kind_of(given)
        if not _holding(text, kind, good):
            raise BadInput(f"--version-file {given} does not hold version {good} at {where}; give the file that "
                           "does, or leave the option out to detect it")
        return Detected((VersionFile(given, kind),), name, False)

    candidates: list[VersionFile] = []
    from_tag = False
    project = pyproject.get("project", {})
    tool = pyproject.get("tool", {})
    if isinstance(project.get("version"), str):
        candidates.append(VersionFile("pyproject.toml", "pyproject"))
        _must_hold(read, candidates[-1], good, where)
    elif "version" in project.get("dynamic", []) or "poetry-dynamic-versioning" in tool:
        dynamic = tool.get("setuptools", {}).get("dynamic", {}).get("version", {})
        requires = " ".join(pyproject.get("build-system", {}).get("requires", []))
        if "attr" in dynamic:
            candidates += _module_files(read, dynamic["attr"])
        elif "file" in dynamic:
            files = dynamic["file"] if isinstance(dynamic["file"], list) else [dynamic["file"]]
            candidates += [VersionFile(f, "text") for f in files]
        elif "path" in tool.get("hatch", {}).get("version", {}):
            candidates.append(VersionFile(tool["hatch"]["version"]["path"], _kind_of(tool["hatch"]["version"]["path"])))
        elif ("setuptools_scm" in tool or tool.get("hatch", {}).get("version", {}).get("source") == "vcs"
              or tool.get("pdm", {}).get("version", {}).get("source") == "scm"
              or tool.get("poetry-dynamic-versioning", {}).get("enable")
              or any(b in requires for b in _TAG_VERSIONED_BACKENDS)):
            from_tag = True
    elif isinstance(tool.get("poetry", {}).get("version"), str):
        candidates.append(VersionFile("pyproject.toml", "poetry"))
        _must_hold(read, candidates[-1], good, where)
    if not candidates and not from_tag and setup_cfg and setup_cfg.has_option("metadata", "version"):
        value = setup_cfg.get("metadata", "version").strip()
        if value.startswith("attr:"):
            candidates += _module_files(read, value[5:].strip())
        elif value.startswith("file:"):
            candidates.append(VersionFile(value[5:].strip(), "text"))
        else:
            candidates.append(VersionFile("setup.cfg", "setup.cfg"))
            _must_hold(read, candidates[-1], good, where)
    # Modules that repeat the version (`__version__ = "1.2.2"` beside pyproject's) are bumped too.
    for path in _module_candidates(listdir):
        if path not in [c.path for c in candidates] and _holding(read(path) or "", "python", good):
            candidates.append(VersionFile(path, "python"))
    found = tuple(c for c in candidates if _holding(read(c.path) or "", c.kind, good))
    if not found and not from_tag:
        raise BadInput(
            f"cannot find the file holding version {good} at {where} (looked at pyproject.toml, setup.cfg and "
            "the packages' __init__.py, _version.py, __about__.py, version.py); pass --version-file PATH"
        )
    return Detected(found, name, from_tag and not found)


def project_name(read: Reader, where: str) -> str | None:
    """The distribution name from pyproject.toml or setup.cfg (what PyPI knows the package as)."""
    return _name(_toml(read, "pyproject.toml", where), _cfg(read("setup.cfg"), where))


def _name(pyproject: dict[str, Any], setup_cfg: configparser.ConfigParser | None) -> str | None:
    return (pyproject.get("project", {}).get("name") or pyproject.get("tool", {}).get("poetry", {}).get("name")
            or (setup_cfg.get("metadata", "name", fallback=None) if setup_cfg else None))


def bump(text: str, kind: str, old: Version, new: Version) -> str:
    """`text` with the version assignment that holds `old` set to `new`; every other byte kept."""
    pattern, section = _pattern(kind)
    start, end = _section_bounds(text, section)
    body = text[start:end]
    for match in pattern.finditer(body):
        if _same(match["value"], old):
            replaced = body[: match.start("value")] + str(new) + body[match.end("value"):]
            return text[:start] + replaced + text[end:]
    raise ValueError(f"no {kind} version assignment holding {old}")


def _holding(text: str, kind: str, version: Version) -> bool:
    try:
        bump(text, kind, version, version)
    except ValueError:
        return False
    return True


def _must_hold(read: Reader, file: VersionFile, good: Version, where: str) -> None:
    text = read(file.path) or ""
    pattern, section = _pattern(file.kind)
    start, end = _section_bounds(text, section)
    values = [m["value"] for m in pattern.finditer(text[start:end])]
    if values and not any(_same(v, good) for v in values):
        raise BadInput(
            f"{file.path} at {where} says version {values[0]}, not {good}: the tag and the version file "
            "disagree; check --good, or pass --version-file"
        )


def _pattern(kind: str) -> tuple[re.Pattern, str | None]:
    return {
        "pyproject": (_TOML_VERSION, "project"),
        "poetry": (_TOML_VERSION, "tool.poetry"),
        "setup.cfg": (_CFG_VERSION, "metadata"),
        "python": (_PY_ASSIGN, None),
        "text": (_PLAIN, None),
    }[kind]


def _section_bounds(text: str, section: str | None) -> tuple[int, int]:
    """The span of `[section]` in an INI/TOML file (the whole text when section is None)."""
    if section is None:
        return 0, len(text)
    header = re.search(rf"^\[\s*{re.escape(section)}\s*\]\s*$", text, re.M)
    if header is None:
        return 0, 0
    following = re.search(r"^\[", text[header.end():], re.M)
    return header.end(), header.end() + following.start() if following else len(text)


def _same(text: str, version: Version) -> bool:
    try:
        return Version(text) == version
    except InvalidVersion:
        return False


def _kind_of(path: str) -> str:
    if path.endswith("pyproject.toml"):
        return "pyproject"
    if path.endswith("setup.cfg"):
        return "setup.cfg"
    return "python" if path.endswith(".py") else "text"


def _module_files(read: Reader, attr: str) -> list[VersionFile]:
    """The file defining a dotted attribute such as `widgets.__version__` or `widgets.about.VERSION`."""
    module = attr.rsplit(".", 1)[0].replace(".", "/")
    for root in ("", "src/"):
        for path in (f"{root}{module}/__init__.py", f"{root}{module}.py"):
            if read(path) is not None:
                return [VersionFile(path, "python")]
    return []


def _module_candidates(listdir: Lister) -> list[str]:
    paths = []
    for root in ("", "src/"):
        for entry, is_dir in (listdir(root.rstrip("/")) or {}).items():
            if not is_dir or entry.startswith((".", "_")) or entry in ("tests", "test", "docs", "src"):
                continue
            inside = listdir(f"{root}{entry}") or {}
            if "__init__.py" in inside:
                paths += [f"{root}{entry}/{name}" for name in MODULE_FILES if name in inside]
    return paths


def _toml(read: Reader, path: str, where: str) -> dict[str, Any]:
    text = read(path)
    if text is None:
        return {}
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{path} at {where} is not valid TOML ({exc}); fix it, or pass --version-file") from None


def _cfg(text: str | None, where: str) -> configparser.ConfigParser | None:
    if text is None:
        return None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        raise BadInput(f"setup.cfg at {where} cannot be read ({type(exc).__name__}); fix it, or pass "
                       "--version-file") from None
    return parser
