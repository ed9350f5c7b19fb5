"""``admc estimate``: latency and energy per sample of a bundle on its target beside a digital baseline, and
the text that itemises it."""
