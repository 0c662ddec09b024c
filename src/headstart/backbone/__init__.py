"""The pretrained backbone and the new head.

:mod:`.weights` names pretrained weights without loading them (no PyTorch),
:mod:`.pretrained` builds any timm model with them, :mod:`.freeze` freezes and
unfreezes it, :mod:`.head` holds the head and the whole network. Importing the
package imports none of them: a cached rerun needs only :mod:`.weights`.
"""
