"""The IR (meaning): ``build`` checks a Spec's references, cycles, reachability, shapes and
class counts and returns the immutable, topologically ordered ``graph.Graph``; ``kinds`` is
the table of node kinds (each kind's resolution, shape, parameter and layer-output counts),
``shapes`` the pure shape and parameter arithmetic they share; ``metrics`` the names of the
metrics training logs; ``gradients`` which tasks' gradients reach which nodes (what
gradient-conflict diagnostics measure); ``weighting`` the node GradNorm balances on.

May import: ``graphc.errors``, ``graphc.lang``. No torch.
"""
