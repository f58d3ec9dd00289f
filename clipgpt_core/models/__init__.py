"""The models of a bundle: CLIP (clip.py, open_clip with our configs), the caption prior (caption_prior.py, a
GPT over captions), the captioner (CLIP -> GPT), the caption -> CLIP embedding prior, the renderer (a diffusers
pipeline with its planner) and the ShapesWorld classifier Explain reads."""
