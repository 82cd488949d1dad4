"""``python -m m2bench ...`` = the ``m2bench`` command (and ``torchrun ... -m m2bench run ...``)."""

from cli import main

if __name__ == "__main__":
    main()
