"""Torch-free facts about every dataset, architecture, allocation and repair method: one registry
per family (`registry.Registry`), one entry per name, looked up by subscript.

The trial identity, the grid validator, the analysis and the CLIs import these without paying for
torch; `sweep.tasks` implements the allocations and repairs against these names.
"""
