"""The arithmetic a twin may run in: one table, read by ``SimulateOptions`` and the command line.

float64 is verification's; float32 runs the machine's physics (a few significant digits of light and voltage)
at about 1.7 times the float64 rate at 36M weights (benchmarks/twin_scaling.py). The ideal executor and
``verify`` always run float64.
"""

PRECISIONS = ("float64", "float32")
