"""LayoutDiffusionPipeline: Stable Diffusion whose UNet also reads a layout map as extra input channels.

    pipe = LayoutDiffusionPipeline.from_pretrained(DIR)          # save_pretrained writes the same folder
    images = pipe(["a red star left of a blue circle"], layout=maps, num_images_per_prompt=1).images

A StableDiffusionPipeline in everything but the UNet's input: `unet.config.in_channels` is the latent's
4 channels plus `planner.LAYOUT_CHANNELS`, and every denoising step concatenates the layout map to the
latent (as diffusers' StableDiffusionDepth2ImgPipeline concatenates its depth map). Prompt encoding,
textual inversion (`load_textual_inversion`), schedulers and saving are StableDiffusionPipeline's own.
Classifier-free guidance drops text and layout together: the unconditional branch sees "" (or the
negative prompt) and an all-zero map, as in training.
"""
from __future__ import annotations

import torch
from diffusers import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput


class LayoutDiffusionPipeline(StableDiffusionPipeline):

    @property
    def layout_channels(self) -> int:
        return self.unet.config.in_channels - self.vae.config.latent_channels

    def check_layout(self, layout: torch.Tensor | None, batch: int, height: int, width: int) -> None:
        shape = (batch, self.layout_channels, height, width)
        if layout is not None and tuple(layout.shape) != shape:
            raise ValueError(f"layout must be {shape} (one map per image), got {tuple(layout.shape)}")

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], layout: torch.Tensor | None = None,
                 negative_prompt: str | list[str] | None = None, num_images_per_prompt: int = 1,
                 guidance_scale: float = 4.0, num_inference_steps: int = 20,
                 generator: torch.Generator | None = None, output_type: str = "pil", return_dict: bool = True,
                 callback_on_step_end=None):
        # 1. inputs: layout (len(prompt) * num_images_per_prompt, C, h, w) or None (the text alone)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        batch = len(prompts) * num_images_per_prompt
        size = self.unet.config.sample_size
        self.check_layout(layout, batch, size, size)
        device, dtype = self._execution_device, self.unet.dtype
        guided = guidance_scale > 1.0

        # 2. text: (batch, T, W) hidden states of the prompt and of the negative prompt / ""
        text, uncond = self.encode_prompt(prompts, device, num_images_per_prompt, guided, negative_prompt)
        cond_map = (layout if layout is not None else torch.zeros(batch, self.layout_channels, size, size))
        cond_map = cond_map.to(device, dtype)
        if guided:
            text = torch.cat([uncond, text])                                      # (2 batch, T, W)
            cond_map = torch.cat([torch.zeros_like(cond_map), cond_map])        # (2 batch, C, h, w)

        # 3. timesteps and the starting noise (batch, 4, h, w)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        latents = self.prepare_latents(batch, self.vae.config.latent_channels, size * self.vae_scale_factor,
                                       size * self.vae_scale_factor, dtype, device, generator)

        # 4. denoise, the layout map beside the latent at every step
        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            x = torch.cat([latents] * 2) if guided else latents
            x = torch.cat([self.scheduler.scale_model_input(x, t), cond_map], dim=1)   # (., 4 + C, h, w)
            pred = self.unet(x, t, encoder_hidden_states=text).sample
            if guided:
                pred_uncond, pred_text = pred.chunk(2)
                pred = pred_uncond + guidance_scale * (pred_text - pred_uncond)
            latents = self.scheduler.step(pred, t, latents, generator=generator).prev_sample
            if callback_on_step_end is not None:     # diffusers' convention: (pipe, step, timestep, tensors)
                latents = callback_on_step_end(self, i, t, {"latents": latents}).get("latents", latents)

        # 5. decode
        image = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        image = self.image_processor.postprocess(image, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return image, None
        return StableDiffusionPipelineOutput(images=image, nsfw_content_detected=None)
