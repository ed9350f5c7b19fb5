"""The compiler pipeline: the driver that runs the passes from the imported graph to the lowered program,
the pass checks of ``--verify-passes``, and the conditioning and guidance steps of the build."""
