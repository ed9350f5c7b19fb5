"""Frontends: a trained model (ONNX, or PyTorch through ``torch.export``) to the graph IR, opened by its format
in one place (``model_file``), and which of its inputs is the state x, the time t and each condition."""
