"""Fast kernels (Triton) and their plain-PyTorch twins (``reference.py``); no nn.Module here."""
