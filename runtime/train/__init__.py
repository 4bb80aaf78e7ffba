"""Training: ``loop`` (one run's epochs, checkpoints, early stopping), ``launch`` (start,
resume, specs x seeds), ``distributed`` (``--nproc`` and torchrun: processes, sharding,
reductions), ``optim`` (optimisers and schedules), ``weighting`` (``[train] loss_weighting``),
``freeze`` (``trainable = false``, ``--freeze``, unfreezing), ``transfer`` (``--init-from``),
``progress`` (the progress bar), ``tensorboard`` (optional TensorBoard logging of a run),
``diagnostics`` (gradient-conflict diagnostics, ``--diagnostics``) and ``sweep`` (``--jobs K``:
runs K at a time in child processes, skipped or resumed by their identity, ``graphc sweep plan``).

May import: graphc, ``graphc.runtime.data``, ``graphc.runtime.runs``, ``graphc.runtime.device``,
``graphc.runtime.metrics``, ``graphc.runtime.scoring`` (the evaluation pass), ``graphc.runtime.report`` (a sweep's run
identity is the report's variant) - not ``graphc.runtime.evaluate`` (graphc eval). Nothing imports
``graphc.runtime.train`` but the command line. ``features`` holds the loop's optional parts (weighting,
diagnostics, freezing, TensorBoard) behind one interface.
"""
