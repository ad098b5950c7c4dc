"""Sparse labels: a few slices or tiles labelled by a person, the rest ``UNLABELLED``.

``srjax sample --template`` writes them; ``srjax run --labels`` adds the supervised
term back on those pixels in stages 2 and 3.
"""

UNLABELLED = 255
