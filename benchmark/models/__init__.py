"""Networks: backbones with the stage features methods read (:mod:`.backbones`), the
packaged pretrained weights (:mod:`.weights`) and parameter/FLOP counts
(:mod:`.cost`). Imports nothing else from :mod:`benchmark`."""
