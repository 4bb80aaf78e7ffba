"""Data sets and augmentation: ``split`` (the ``Split``/``Dataset`` containers every source
returns), the sources ``cifar100``, ``imagefolder`` and ``synthetic``, ``load`` (one entry
point over them), ``augment`` (batched Keras-style augmentation and normalisation) and
``batches`` (a split on the training device, or streamed there through pinned memory).

May import: graphc (errors, files, the spec's data tables). Nothing else of the runtime.
"""
