"""What comes after segmentation: features counted, measured, queried, tracked and graphed
(``quantify``), and which slices are worth labelling (``sampling``)."""
