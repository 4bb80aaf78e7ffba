"""Run directories and what is stored in them: ``rundir`` (the layout, metrics files, finding
runs), ``record`` (config.json as one typed run record, read and written there only; a run's
spec and data rebuilt from it), ``checkpoint`` (writing and reading ``last.pt``/``best.pt``) and
``weights`` (a run's trained model rebuilt for eval, export and predict).

May import: graphc, and of the runtime only the layer below (``device``, ``allocator``, ``data``).
Training, evaluation, reports, export and prediction all build on this.
"""
