"""graphc runtime: data sets, augmentation, training, evaluation and reporting.

It consumes compiled modules and the IR (graphc.ir.Graph); it knows nothing of TOML.
"""
