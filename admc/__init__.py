"""admc: compile trained flow-matching MLPs into fixed-point programs for analog hardware."""

__version__ = "0.1.0"
