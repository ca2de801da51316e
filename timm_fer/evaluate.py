"""``python -m timm_fer.evaluate``: the evaluation command as a module, for ``torchrun -m timm_fer.evaluate``."""
import sys

from .cli.eval import main

if __name__ == '__main__':
    sys.exit(main())
