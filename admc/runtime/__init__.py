"""Running programs and models: the ideal executor of a block program, continuous-time integration, the
source model as a float64 velocity function, the reference executor, a bundle's runs (``simulate``: ideal or
its target's twin), and the conditioning inputs and guidance at run time."""
