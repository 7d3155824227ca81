"""prune-sweep: label-free repair × sparsity allocation sweeps on Ray Tune."""

__version__ = "0.1.0"
