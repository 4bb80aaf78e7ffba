"""The built-in specs: the six reference specs (and examples) that ship with graphc.

They live in the repository's ``specs/`` folder, which is installed as the package data
``graphc/specs`` (see pyproject.toml), so a name such as ``shared_reuse_coarse`` works
from any folder after a plain ``pip install .`` as well as in a source checkout.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]  # graphc/


def specs_dir() -> Path:
    """The folder of the built-in specs: graphc/specs when installed, <checkout>/specs in a source tree."""
    for candidate in (_PACKAGE / "specs", _PACKAGE.parent / "specs"):
        if (candidate / "reported_results.csv").is_file():
            return candidate
    return _PACKAGE / "specs"  # absent: builtin_specs() is then empty and names are not resolved


@dataclass(frozen=True)
class BuiltinSpec:
    name: str  # what a user types: "shared_reuse_coarse", "examples/cifar10_folders"
    path: Path
    summary: str  # the spec's description (or its first comment line)


def builtin_specs() -> list[BuiltinSpec]:
    """Every built-in spec, the reference specs first, each with a one-line summary."""
    root = specs_dir()
    files = sorted(root.glob("*.toml")) + sorted(root.glob("examples/*.toml"))
    return [BuiltinSpec(f.relative_to(root).with_suffix("").as_posix(), f, _summary(f)) for f in files]


def _summary(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    try:
        description = tomllib.loads(text).get("description")
    except tomllib.TOMLDecodeError:
        description = None
    if isinstance(description, str) and description.strip():
        return description.strip().splitlines()[0]
    comment = next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")), "")
    return comment


def builtin_path(name: str) -> Path | None:
    """The file of the built-in spec ``name`` (with or without ``.toml``), or None."""
    name = name[: -len(".toml")] if name.endswith(".toml") else name
    return next((spec.path for spec in builtin_specs() if spec.name == name), None)


def resolve_spec_path(path: str | Path) -> Path:
    """``path`` itself when it exists; else the built-in spec of that name; else ``path`` (load reports it)."""
    path = Path(path)
    if path.exists() or path.is_absolute() or len(path.parts) > 2:
        return path
    return builtin_path(path.as_posix()) or path
