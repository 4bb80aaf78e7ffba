"""graphc's command line (installed as ``graphc.cli``): the top of the house, above the runtime.

typer + rich, thin over the public API of the compiler (``graphc``) and of the runtime
(``graphc.runtime``); everything it does is callable from Python too. ``graphc`` (the console
script) and ``python -m graphc`` both call :func:`main`.
"""

from graphc.cli.commands import app, main

__all__ = ["app", "main"]
