"""Putting a trained model to work: export with a parity check (`export`), an exported model that
predicts without PyTorch (`exported`), batch prediction over files (`batch`), an HTTP service
(`serve`). Importing this package loads no PyTorch."""
