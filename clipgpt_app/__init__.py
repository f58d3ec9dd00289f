"""The app: the Gradio UI (main.py; one module per tab in tabs/) and the `clipgpt` command (cli.py)."""
