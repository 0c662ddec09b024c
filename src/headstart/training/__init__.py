"""Training: stage 1 (the head on the frozen backbone), then the guarded fine-tune.

:mod:`.fitting` orchestrates a fit, by either workflow; :mod:`.linear` is the
lightweight head (no PyTorch); :mod:`.stages` holds stage 1 and the guarded
fine-tune, :mod:`.loop` the epochs with early stopping and checkpoints,
:mod:`.checkpoint` the file, :mod:`.results` what training produced as plain
data. Importing the package imports none of them.
"""
