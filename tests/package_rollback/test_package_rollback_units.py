"""Package rollback pieces without servers: versions, changelogs, version files."""

from __future__ import annotations

import pytest
from packaging.version import Version

from backout.errors import BadInput
from backout.package_rollback import version_file
from backout.package_rollback.changelog import Changelog
from backout.package_rollback.plan import Options
from backout.package_rollback.versions import (
    detect_prefix,
    next_patch,
    parse,
    split_tag,
    version_of_tag,
)

# -- versions --


@pytest.mark.parametrize("bad, new", [
    ("1.2.3", "1.2.4"), ("1.2", "1.2.1"), ("1", "1.0.1"), ("1.2.3.4", "1.2.4"), ("1.2.3rc1", "1.2.4"),
    ("1.2.3.post2", "1.2.4"), ("2!1.0.0", "2!1.0.1"), ("0.9.9", "0.9.10"),
])
def test_next_patch_is_a_valid_newer_version(bad, new):
    result = next_patch(Version(bad))
    assert str(result) == new
    assert result > Version(bad)


def test_parse_refuses_what_pypi_would_refuse():
    with pytest.raises(BadInput, match=r"--bad '1.2.4-rollback' is not a PEP 440 version"):
        parse("1.2.4-rollback", "--bad")
    assert parse("v1.2.3", "--bad") == Version("1.2.3")


@pytest.mark.parametrize("tag, expected", [
    ("v1.2.3", ("v", "1.2.3")), ("1.2.3", ("", "1.2.3")), ("release-1.2.3", ("release-", "1.2.3")),
    ("widgets-v2.0", ("widgets-v", "2.0")), ("latest", None), ("v1.2.x", None),
])
def test_split_tag(tag, expected):
    split = split_tag(tag)
    assert (None if split is None else (split[0], str(split[1]))) == expected


def test_prefix_comes_from_the_bad_versions_tag_then_the_majority():
    assert detect_prefix(["1.2.2", "v1.2.3"], Version("1.2.3")) == "v"
    assert detect_prefix(["release-1.0", "release-1.1", "v0.1", "docs"], Version("9.9")) == "release-"
    assert detect_prefix(["docs"], Version("1.0")) == "v"
    assert version_of_tag("v1.2.3", "v") == Version("1.2.3")
    assert version_of_tag("1.2.3", "v") is None


def test_options_check_the_forms_before_any_network():
    with pytest.raises(BadInput, match="--repo 'widgets' is not OWNER/NAME"):
        Options(repo="widgets", bad="1.2.3").check()
    with pytest.raises(BadInput, match="--good 1.2.4 is not older than --bad 1.2.3"):
        Options(repo="acme/widgets", bad="1.2.3", good="1.2.4").check()
    with pytest.raises(BadInput, match="--good 1.2.3.0 is not older"):
        Options(repo="acme/widgets", bad="1.2.3", good="1.2.3.0").check()
    options = Options(repo="acme/widgets", bad="1.2.3")
    options.check()
    assert options.reason == "1.2.3 is broken"


# -- changelogs --

KEEP = """# Changelog

## [Unreleased]

- Something not released yet

## [1.2.3] - 2024-05-01

### Fixed

- Broke everything

## [1.2.2] - 2024-04-01 [YANKED]

- Almost fine

## [1.2.1] - 2024-03-01

- Fine

[unreleased]: https://github.com/acme/widgets/compare/v1.2.3...HEAD
[1.2.3]: https://github.com/acme/widgets/compare/v1.2.2...v1.2.3
[1.2.2]: https://github.com/acme/widgets/compare/v1.2.1...v1.2.2
[1.2.1]: https://github.com/acme/widgets/releases/tag/v1.2.1
"""

TAGS = {"bad": "v1.2.3", "good": "v1.2.1", "new": "v1.2.4"}


def test_keep_a_changelog_is_read_with_its_markers():
    log = Changelog(KEEP, "CHANGELOG.md")
    assert [(s.label, s.marked) for s in log.releases()] == [("1.2.3", False), ("1.2.2", True), ("1.2.1", False)]
    assert log.sections[0].version is None  # Unreleased


def test_the_rollback_entry_goes_below_unreleased_with_links_fixed():
    log = Changelog(KEEP, "CHANGELOG.md")
    out = log.with_rollback(new=Version("1.2.4"), bad=Version("1.2.3"), good=Version("1.2.1"),
                            entry=["Rolled back 1.2.3."], date="2026-01-02", tags=TAGS, bad_sha="abc123")
    lines = out.splitlines()
    assert lines.index("## [1.2.4] - 2026-01-02") < lines.index("## [1.2.3] - 2024-05-01 [YANKED]")
    assert lines.index("- Something not released yet") < lines.index("## [1.2.4] - 2026-01-02")
    assert "- Rolled back 1.2.3." in lines
    assert "[unreleased]: https://github.com/acme/widgets/compare/v1.2.4...HEAD" in lines
    assert "[1.2.4]: https://github.com/acme/widgets/compare/v1.2.1...v1.2.4" in lines
    # The deleted tag's link now names its commit, which stays reachable.
    assert "[1.2.3]: https://github.com/acme/widgets/compare/v1.2.2...abc123" in lines
    assert lines.index("[1.2.4]: https://github.com/acme/widgets/compare/v1.2.1...v1.2.4") < lines.index(
        "[1.2.3]: https://github.com/acme/widgets/compare/v1.2.2...abc123")
    again = Changelog(out, "CHANGELOG.md").with_rollback(
        new=Version("1.2.4"), bad=Version("1.2.3"), good=Version("1.2.1"), entry=["Rolled back 1.2.3."],
        date="2026-01-03", tags=TAGS, bad_sha="abc123")
    assert again == out


@pytest.mark.parametrize("heading, label", [
    ("## 1.2.3 (2024-05-01)", "1.2.3"), ("## v1.2.3 - 2024-05-01", "1.2.3"), ("## Version 1.2.3", "1.2.3"),
    ("## [1.2.3](https://example.com) - 2024-05-01", "1.2.3"), ("# 1.2.3", "1.2.3"), ("### 1.2.3", "1.2.3"),
])
def test_common_heading_variants(heading, label):
    hashes = heading.split()[0]
    text = f"# Changes\n\n{heading.replace('1.2.3', '1.2.3')}\n\n- x\n\n{heading.replace('1.2.3', '1.2.2')}\n\n- y\n"
    if hashes == "#":
        text = text.replace("# Changes\n\n", "")
    log = Changelog(text, "CHANGES.md")
    assert [s.label for s in log.releases()] == [label, "1.2.2"]
    out = log.with_rollback(new=Version("1.2.4"), bad=Version("1.2.3"), good=Version("1.2.2"), entry=["back"],
                            date="2026-01-02", tags=TAGS)
    assert heading.replace("1.2.3", "1.2.4").replace("2024-05-01", "2026-01-02") in out.splitlines()


def test_setext_headings():
    text = "Changes\n=======\n\n1.2.3 (2024-05-01)\n------------------\n\n* x\n\n1.2.2 (2024-04-01)\n------------------\n\n* y\n"
    log = Changelog(text, "CHANGES.md")
    assert [s.label for s in log.releases()] == ["1.2.3", "1.2.2"]
    out = log.with_rollback(new=Version("1.2.4"), bad=Version("1.2.3"), good=Version("1.2.2"), entry=["back"],
                            date="2026-01-02", tags=TAGS).splitlines()
    at = out.index("1.2.4 (2026-01-02)")
    assert out[at + 1] == "-" * len("1.2.4 (2026-01-02)")
    assert "* back" in out  # the file's own bullet
    marked = out.index("1.2.3 (2024-05-01) [YANKED]")
    assert out[marked + 1] == "-" * len(out[marked])
    assert Changelog("\n".join(out), "CHANGES.md").find(Version("1.2.3")).marked


@pytest.mark.parametrize("text, message", [
    ("# Changelog\n\nNothing here yet.\n", "names no release"),
    ("## [1.2.2]\n\n## [1.2.3]\n", r"not newest first: 1.2.3 \(line 3\) is below 1.2.2"),
    ("## [1.2.3]\n\n## [1.2.3]\n", "lists 1.2.3 twice"),
    ("## [1.2.3]\n\n## [1.2.x]\n", r"line 3: '\[1.2.x\]' names '1.2.x', which is not a PEP 440 version"),
])
def test_unexpected_changelogs_are_refused(text, message):
    with pytest.raises(BadInput, match=message):
        Changelog(text, "CHANGELOG.md")


# -- version files --


def tree(files: dict[str, str]):
    def read(path: str):
        return files.get(path)

    def listdir(path: str):
        prefix = f"{path}/" if path else ""
        entries = {}
        for name in files:
            if name.startswith(prefix):
                rest = name[len(prefix):]
                entries[rest.split("/")[0]] = "/" in rest
        return entries or None

    return read, listdir


def test_pyproject_and_a_repeated_dunder_version_are_both_bumped():
    files = {
        "pyproject.toml": '[project]\nname = "widgets"\nversion = "1.2.2"\n\n[tool.other]\nversion = "9"\n',
        "src/widgets/__init__.py": '"""Widgets."""\n__version__ = "1.2.2"\n',
        "tests/__init__.py": '__version__ = "1.2.2"\n',
    }
    read, listdir = tree(files)
    found = version_file.detect(read, listdir, Version("1.2.2"), where="v1.2.2")
    assert [(f.path, f.kind) for f in found.files] == [("pyproject.toml", "pyproject"),
                                                        ("src/widgets/__init__.py", "python")]
    assert found.project_name == "widgets"
    bumped = version_file.bump(files["pyproject.toml"], "pyproject", Version("1.2.2"), Version("1.2.4"))
    assert bumped == files["pyproject.toml"].replace('version = "1.2.2"', 'version = "1.2.4"')
    assert 'version = "9"' in bumped


def test_setup_cfg_and_attr_and_given_file():
    read, listdir = tree({"setup.cfg": "[metadata]\nname = gadgets\nversion = attr: gadgets.__version__\n",
                          "gadgets/__init__.py": "__version__ = '2.0.1'\n"})
    found = version_file.detect(read, listdir, Version("2.0.1"), where="v2.0.1")
    assert [f.path for f in found.files] == ["gadgets/__init__.py"] and found.project_name == "gadgets"
    assert version_file.bump("__version__ = '2.0.1'\n", "python", Version("2.0.1"), Version("2.0.2")) == \
        "__version__ = '2.0.2'\n"

    read, listdir = tree({"setup.cfg": "[metadata]\nname = gadgets\nversion = 2.0.1\n"})
    assert version_file.bump("[metadata]\nname = gadgets\nversion = 2.0.1\n", "setup.cfg", Version("2.0.1"),
                             Version("2.0.2")) == "[metadata]\nname = gadgets\nversion = 2.0.2\n"
    assert [f.kind for f in version_file.detect(read, listdir, Version("2.0.1"), where="t").files] == ["setup.cfg"]

    read, listdir = tree({"VERSION": "2.0.1\n", "setup.py": "..."})
    assert version_file.detect(read, listdir, Version("2.0.1"), given="VERSION", where="t").files[0].kind == "text"
    with pytest.raises(BadInput, match="--version-file VERSION does not hold version 2.0.0 at t"):
        version_file.detect(read, listdir, Version("2.0.0"), given="VERSION", where="t")
    with pytest.raises(BadInput, match="--version-file nope.py is not in the repository at t"):
        version_file.detect(read, listdir, Version("2.0.1"), given="nope.py", where="t")


def test_a_version_from_the_tag_needs_no_file():
    read, listdir = tree({"pyproject.toml": '[build-system]\nrequires = ["hatchling", "hatch-vcs"]\n\n'
                                            '[project]\nname = "w"\ndynamic = ["version"]\n\n'
                                            '[tool.hatch.version]\nsource = "vcs"\n'})
    found = version_file.detect(read, listdir, Version("1.0"), where="v1.0")
    assert found.files == () and found.from_tag


def test_disagreeing_or_missing_version_files_are_refused():
    read, listdir = tree({"pyproject.toml": '[project]\nname = "w"\nversion = "1.2.1"\n'})
    with pytest.raises(BadInput, match="pyproject.toml at v1.2.2 says version 1.2.1, not 1.2.2"):
        version_file.detect(read, listdir, Version("1.2.2"), where="v1.2.2")
    read, listdir = tree({"setup.py": "setup()"})
    with pytest.raises(BadInput, match="cannot find the file holding version 1.2.2 at v1.2.2.*--version-file"):
        version_file.detect(read, listdir, Version("1.2.2"), where="v1.2.2")
    read, listdir = tree({"pyproject.toml": "[project\n"})
    with pytest.raises(BadInput, match="pyproject.toml at v1 is not valid TOML"):
        version_file.detect(read, listdir, Version("1"), where="v1")


# -- git credentials --


def test_the_token_reaches_git_through_the_environment_for_its_https_host_only():
    import base64

    from backout.package_rollback.gitrepo import auth_env

    env = auth_env("https://github.com/acme/widgets.git", "ghp_secret")
    assert env["GIT_CONFIG_KEY_0"] == "http.https://github.com/.extraHeader"
    assert env["GIT_CONFIG_VALUE_0"] == "Authorization: Basic " + base64.b64encode(b"x-access-token:ghp_secret").decode()
    assert auth_env("file:///srv/widgets.git", "ghp_secret") == {}
    assert auth_env("git@github.com:acme/widgets.git", "ghp_secret") == {}
    assert auth_env("https://github.com/acme/widgets.git", None) == {}
