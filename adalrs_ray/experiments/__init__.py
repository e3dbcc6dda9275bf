"""Experiments built from the parts: the comparison's presets and runner, the LR sweep.

Holds :mod:`~adalrs_ray.experiments.presets` (named settings of a comparison, the arms' settings
from the arm registry), :mod:`~adalrs_ray.experiments.compare` (``run_compare``: a whole
comparison on a local or joined Ray cluster, with its report; merged reports) and
:mod:`~adalrs_ray.experiments.sweep` (``run_sweep``: an LR sweep of the LM task and its
velocity analysis). These are library functions: the CLI (:mod:`adalrs_ray.cli`) parses
arguments and calls them, and so do the examples.

May import: every layer below it (the tasks and trainables of :mod:`train_loops`, the comparison,
the arms, the report, the core). Never the CLI.
"""
