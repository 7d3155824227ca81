"""From a grid to a checked plan: grids, trial identity, cells, and the checks before Ray starts."""
