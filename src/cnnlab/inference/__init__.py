"""Predictions from a trained model: the Predictor (a run folder through PyTorch), preprocessing as
a typed value (NumPy/Pillow), exported models (ONNX Runtime) and one loader for both. It imports no
training code, no reports and no plotting."""
