"""Training: ``loop`` (one run's epochs, checkpoints, early stopping), ``launch`` (start,
resume, specs x seeds), ``distributed`` (``--nproc``: worker processes, sharding, reductions),
``optim`` (optimisers and schedules) and ``progress`` (the progress bar).

May import: graphc, ``runtime.data``, ``runtime.runs``, ``runtime.device``,
``runtime.metrics``, ``runtime.evaluate``. Nothing imports ``runtime.train`` but the
command line.
"""
