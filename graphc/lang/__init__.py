"""The spec language (form): pydantic models of every node kind and table, and the table of
node kinds ``NODE_KINDS`` that every layer's kind table follows (``spec``); and
TOML text -> a validated :class:`~graphc.lang.spec.Spec` with templates merged and repeats
expanded (``load``); the ``[data.hierarchy]`` tables' links, chains and checks without data
(``hierarchy``); what to write instead of other frameworks' constructs (``hints``); the
built-in specs (``builtin``).

May import: ``graphc.errors``. Nothing here knows of networkx, torch or the runtime.
"""
