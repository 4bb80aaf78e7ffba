"""``--help`` as written: one pass over the command tree, so that no command's help loses words.

typer renders help with rich markup, where ``[train]`` is a tag (and vanishes), and labels each
value with its Python type (``<bool>``, ``<int range> [1<=x<=4294967296]``, ``<list[Path]>``).
:class:`HelpGroup` is the class of graphc's top-level click group; when typer builds it, it walks
every command and subcommand once and

- escapes the square brackets of every help text and docstring (``[train] compile = true`` is
  shown as written; graphc's help strings hold no markup of their own), and joins a docstring's
  wrapped lines into paragraphs (blank lines still separate them);
- gives every value a readable name: a flag none, a number ``N`` (``X`` for a decimal), a path
  ``FILE`` or ``DIR``, a word the option's own name (``--device DEVICE``), an argument its
  metavar or name, with ``...`` where it takes several (``SPEC...``); a name the command set
  itself (``metavar="RUN_DIR"``) is kept. Ranges stay in the checks (and in the help text where
  the text says them), not in the value's name.

Imports nothing from graphc.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Union, get_args, get_origin

from rich.markup import escape
from typer.core import TyperGroup

if TYPE_CHECKING:  # typer >= 0.20 needs no click (it builds its own copy of click's classes)
    import click


def tidy_command(command) -> None:
    """Escape and rename, as the module says, in ``command`` and every command under it (once).

    Duck-typed: typer >= 0.20 builds its own copy of click's classes (typer._click)."""
    if getattr(command, "_graphc_tidy", False):
        return
    command._graphc_tidy = True
    if command.help:
        command.help = escape(_paragraphs(command.help))
    if getattr(command, "short_help", None):
        command.short_help = escape(command.short_help)
    for param in command.params:
        _tidy_param(param)
    made = command.get_help_option  # made per context: tidied as it is made

    def help_option(ctx):
        option = made(ctx)
        if option is not None:
            _tidy_param(option)
        return option

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        tidy_command(sub)


def _paragraphs(text: str) -> str:
    """A docstring's lines joined into paragraphs: rich keeps a single newline as a line break."""
    text = text.strip("\n")
    paragraphs = re.split(r"\n[ \t]*\n", text)
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def value_name(param: click.Parameter) -> str | None:
    """The name ``--help`` shows for ``param``'s value: None for a flag."""
    if _is_argument(param):
        return (param.metavar or (param.name or "value").upper()).removesuffix("S" if param.nargs != 1 else "")
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return None
    if param.metavar:
        return param.metavar
    name = (param.name or "value").upper()
    kind = _value_type(param)
    if kind is bool:
        return None
    if kind is int:
        return "N"
    if kind is float:
        return "X"
    if isinstance(kind, type) and issubclass(kind, Path):
        return "DIR" if (param.name or "").endswith("dir") else "FILE"
    return WORDS.get(name, name)


# Python parameter names that read badly as a value's name.
WORDS = {"FMT": "FORMAT", "OUTPUT": "FILE", "AS_JSON": "JSON"}


def _value_type(param: click.Parameter) -> object:
    """The Python type of one value of ``param``: from typer's annotation (typer >= 0.20), else
    from the click type (older typer builds click types)."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None:
        annotation = descriptor.annotation
        while get_origin(annotation) in (list, tuple, Union, UnionType):
            annotation = next((a for a in get_args(annotation) if a is not type(None)), None)
        return annotation
    import click  # only older typer builds click types, and then click is installed with it

    kind = getattr(param, "type", None)
    if isinstance(kind, click.Path):
        return Path
    return {click.INT: int, click.FLOAT: float, click.BOOL: bool}.get(
        kind, int if isinstance(kind, click.IntRange) else float if isinstance(kind, click.FloatRange) else str
    )


def _is_argument(param) -> bool:
    return getattr(param, "param_type_name", "") == "argument"


def _tidy_param(param) -> None:
    if getattr(param, "_graphc_tidy", False):
        return
    param._graphc_tidy = True
    help_text = getattr(param, "help", None)
    if help_text:
        param.help = escape(help_text)
    name = value_name(param)
    if _is_argument(param):
        several = param.nargs != 1
        param.metavar = f"{name}..." if several else name  # the panel's name column: SPEC...
        usage = (name if param.required else f"[{name}]") + ("..." if several else "")
        param.get_usage_pieces = lambda ctx: [usage]  # the usage line: [SPEC]..., not [SPEC...]...
        param.display_type_rich = lambda ctx: None  # no type column: the name says it
    else:
        param.metavar = name
        param.display_type_rich = lambda ctx: name or ""
    # the range is checked all the same; shown, it is clutter ([0<=x<=4294967295])
    param._get_number_range_help_str = lambda: None


class HelpGroup(TyperGroup):
    """graphc's top-level group: tidies every command's help as typer builds it (see the module)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        tidy_command(self)
