"""The seeds' published models in the workbench: where each piece lives (sources), how it is fetched (fetch),
read without running anything from the file (unpickle), and converted onto the project's components
(clip_gpt, clipcap), then assembled into a bundle (assemble)."""
