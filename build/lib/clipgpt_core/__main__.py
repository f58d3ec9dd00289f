"""python -m clipgpt_core COMMAND ...: the same as the `clipgpt` command (see clipgpt_core.cli)."""
from .cli import main

if __name__ == "__main__":
    main()
