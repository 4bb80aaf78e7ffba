"""The PyTorch backend: ``blocks`` (one nn.Module per node kind, Keras-compatible
initialisation) and ``compile`` (IR -> ``torch.fx.GraphModule`` with a straight-line forward).

May import: ``graphc.ir``, ``graphc.lang.spec`` (layer defaults), torch.
"""
