"""``python -m timm_fer.train``: the training command as a module, for ``torchrun -m timm_fer.train``."""
import sys

from .cli.train import main

if __name__ == '__main__':
    sys.exit(main())
