"""What `docker build` would see of this repo: the build context after .dockerignore, and the lock's entries.

Docker's rules (moby's patternmatcher): patterns are matched in order against each path relative to the context
root and against each of its parent directories; the last matching pattern wins, `!` re-includes; `*` and `?` stay
within one path segment, `**` spans any number of them.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "image.lock"


def _regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and (end := pattern.find("]", i)) > i:
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


class DockerIgnore:
    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        self.reincluded: list[str] = []  # the `!` patterns, to know which excluded folders to look into
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                negate = line.startswith("!")
                pattern = line.removeprefix("!").strip().strip("/")
                self.rules.append((negate, _regex(pattern)))
                if negate:
                    self.reincluded.append(pattern)

    def excluded(self, relative: str) -> bool:
        parts = relative.strip("/").split("/")
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        result = False
        for negate, regex in self.rules:
            if any(regex.fullmatch(prefix) for prefix in prefixes):
                result = not negate
        return result

    def may_hold_included(self, folder: str) -> bool:
        """Whether anything under an excluded folder may be re-included (else it is skipped whole, as Docker does)."""
        return any(p.startswith(folder + "/") or not p[:1].isalnum() for p in self.reincluded)


def dockerignore() -> DockerIgnore:
    return DockerIgnore((REPO / ".dockerignore").read_text())


def copy_build_context(dest: Path) -> list[str]:
    """Copy the files Docker would send (tracked or not, as Docker does not read .gitignore); their paths."""
    ignore = dockerignore()
    copied = []
    for folder, subfolders, files in os.walk(REPO):
        base = Path(folder).relative_to(REPO).as_posix().removeprefix(".").lstrip("/")
        subfolders[:] = [d for d in subfolders if not ignore.excluded(f"{base}/{d}".lstrip("/"))
                         or ignore.may_hold_included(f"{base}/{d}".lstrip("/"))]
        for name in files:
            relative = f"{base}/{name}".lstrip("/")
            if not ignore.excluded(relative):
                (dest / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / relative, dest / relative)
                copied.append(relative)
    return sorted(copied)


@dataclass
class Pin:
    name: str  # as written in the lock (uv writes normalized names)
    version: str
    hashes: list[str] = field(default_factory=list)
    via: list[str] = field(default_factory=list)


def read_lock(text: str | None = None) -> dict[str, Pin]:
    """The lock's pins by normalized name, with their hashes and `# via` annotations."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for raw in (LOCK.read_text() if text is None else text).splitlines():
        line = raw.strip()
        if match := re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;\\]+).*", line):
            current = Pin(normalize(match[1]), match[2])
            pins[current.name] = current
        elif line == "# via":
            continue
        elif current and (match := re.fullmatch(r"--hash=sha256:([0-9a-f]{64})\s*\\?", line)):
            current.hashes.append(match[1])
        elif current and (match := re.fullmatch(r"#\s+(?:via\s+)?([A-Za-z0-9._-]+(?: \(pyproject\.toml\))?)", line)):
            current.via.append(match[1] if "pyproject" in match[1] else normalize(match[1]))
    return pins


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
