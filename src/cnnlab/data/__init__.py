"""Data: sources → split → decoded uint8 tensors → batches (``pipeline.prepare_data``), shards,
inspection. ``cnnlab.data.images`` (decoding only) imports no PyTorch, so the ONNX predictor can use
it in a process without torch; import the module you need."""
