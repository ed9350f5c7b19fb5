"""What fine-tuning fits the program's velocity to (no torch: the argument parser reads these names).

``flow-matching``: the data's x₁ − x₀ (conditional flow matching). ``teacher``: the source model's own velocity
at the same states, with its weights before fine-tuning (``flow_matching`` explains when to use which).
``samples``: the source model's ideal final samples (verify's reference executor, its weights before fine-tuning)
from the same seeded noise as the program's final samples on the twin, gradients through every step
(``sample_objective``).
"""

FLOW_MATCHING, TEACHER, SAMPLES = "flow-matching", "teacher", "samples"
OBJECTIVES = (FLOW_MATCHING, TEACHER, SAMPLES)
# Flow matching's target carries the data's own variance, so its steps are kept small; the teacher's does not.
LEARNING_RATES = {FLOW_MATCHING: 2e-4, TEACHER: 1e-3, SAMPLES: 1e-3}
