"""Using a trained arm: one loader (`loader.load_trained_arm`), predict, export, explain.

The names below are what `leukaug explain` and `leukaug export` offer. They live here, not
in the modules that use them, so the command line lists them without importing torch.
"""

CAM_TARGETS = ("predicted", "all", "hem")  # explain: whose class the Grad-CAM shows
EXPORT_FORMATS = ("onnx", "pt2")  # export.EXPORTERS: one exporter per format
INPUT_DTYPES = ("uint8", "float32")  # an exported model's input: 0..255 or [0, 1]
