"""The Space's entry point and `python app.py`: the CLIP GPT app (clipgpt_app.main; `--help` for its options)."""
from clipgpt_app.main import main

if __name__ == "__main__":
    main()
