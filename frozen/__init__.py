"""The frozen foundation networks, in one place: the encoders the feature cache runs (CAVP, TimeChat's visual path,
AudioMAE) and the evaluation networks (PANNs, VGGish, PaSST, ImageBind, Synchformer).

Every network has a ``full`` configuration (the released checkpoint, loaded through :mod:`frozen.weights` with
every key and shape checked) and a ``tiny`` one (the same classes, small, seeded random weights).
"""
