"""Verification: the chain source model ≡ canonical network ≡ bundle (ideal) ≈ bundle (twin), its
per-condition section, the error and distribution metrics it judges by, and the written report."""
