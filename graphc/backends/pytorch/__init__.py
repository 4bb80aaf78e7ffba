"""The PyTorch backend: ``blocks`` (the nn.Modules of the node kinds, Keras-compatible
initialisation) and ``compile`` (IR -> ``torch.fx.GraphModule`` with a straight-line forward;
its ``LOWERINGS`` is the backend's table of node kinds: a module or fx calls per kind).

May import: ``graphc.ir``, ``graphc.lang.spec`` (layer defaults), torch.
"""
