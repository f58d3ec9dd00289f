"""python -m clipgpt_app COMMAND ...: the same as the `clipgpt` command (see clipgpt_app.cli)."""
from .cli import main

if __name__ == "__main__":
    main()
