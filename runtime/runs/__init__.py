"""Run directories and what is stored in them: ``rundir`` (the layout, metrics files, finding
runs), ``checkpoint`` (writing and reading ``last.pt``/``best.pt``) and ``weights`` (a run's
trained model rebuilt for eval, export and predict).

May import: graphc. Nothing else of the runtime: training, evaluation, reports, export and
prediction all build on this.
"""
