"""``python -m streamgen.server [options]``: the same as ``streamgen serve``."""
from .cli import main

if __name__ == "__main__":
    main()
