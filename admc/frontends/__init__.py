"""Frontends: a trained model (ONNX, or PyTorch through ``torch.export``) to the graph IR, and which of its
inputs is the state x, the time t and each condition."""
