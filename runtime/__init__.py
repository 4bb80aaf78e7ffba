"""graphc's runtime (installed as ``graphc.runtime``, from the repository's ``runtime/`` folder): data sets, training, evaluation, reports, export and prediction, built on
the compiler (``graphc``). It consumes compiled modules and the IR; it knows nothing of TOML.

Layers, bottom up (a module imports only from its own layer or below; never upwards):

    device.py      where and in which precision a model runs
    allocator.py   the host allocator keeps freed memory for the next batch
    data/          data sets and augmentation
    runs/          run directories, checkpoints, a run's trained weights
    metrics.py     losses and metrics of a batch, accumulated over a split
    evaluate.py    a model on a split; ``graphc eval``
    train/         the training loop, launching, distributed processes, optimisers
    report/        ``graphc report``: tables, plots, files
    export.py      ``graphc export``: a run's weights -> ONNX (through graphc.backends.onnx)
    predict.py     ``graphc predict``: ONNX files or run directories on image files
"""
