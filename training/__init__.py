"""PyTorch side: RRUFF data sets, the DRCNN, the training loop, evaluation and ONNX export.

Imports `spectra`; never imports `service`.
"""
