"""Data sets and augmentation: ``split`` (the ``Split``/``Dataset`` containers every source
returns), the sources ``cifar100``, ``imagefolder`` and ``synthetic``, ``load`` (one entry
point over them) and ``augment`` (batched Keras-style augmentation and normalisation).

May import: graphc (errors, files, the spec's data tables). Nothing else of the runtime.
"""
