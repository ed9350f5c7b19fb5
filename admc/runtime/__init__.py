"""Running programs and models: the ideal executor of a block program, continuous-time integration, the
source model as a float64 velocity function, the reference executor, and the conditioning inputs at run
time."""
