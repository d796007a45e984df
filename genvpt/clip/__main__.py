"""``python -m genvpt.clip convert-torchscript IN OUT`` (see :func:`genvpt.clip.model.main`)."""
from .model import main

if __name__ == "__main__":
    main()
