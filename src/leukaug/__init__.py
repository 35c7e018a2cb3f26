"""leukaug: augmentation studies for ALL-vs-HEM white-blood-cell image classification."""

__version__ = "0.1.0"

# Label encoding used everywhere (see ARCHITECTURE.md): ALL (leukemic) is the positive class.
LABEL_ALL = 1
LABEL_HEM = 0
CLASS_NAMES = {LABEL_HEM: "HEM", LABEL_ALL: "ALL"}
