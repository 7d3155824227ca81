"""Running a plan: the trial's stages, the Ray side, the driver's callbacks and the node cache."""
