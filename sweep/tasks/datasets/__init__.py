"""Internals of `sweep.tasks.data`: on-disk formats, per-dataset sources, the decode cache and
the training-time datasets. Import the public API from `sweep.tasks.data`, not from here."""
