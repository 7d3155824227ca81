"""Torch-free facts about every dataset and architecture: one registry entry each.

The analysis, the grid validator and the CLIs import these without paying for torch.
"""
