"""CLIP GPT's trainers, beside the runtime library as open_clip_train is beside open_clip: one module
a component, each a command (`python -m clipgpt_train.clip`, `.prior`, `.captioner`,
`.embedding_prior`, `.renderer`, `.classifier`; `.bundle` retrains a bundle's stale components in
dependency order). They import clipgpt_core; clipgpt_core never imports them."""
