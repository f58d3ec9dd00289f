"""UnclipDecoderPipeline: unCLIP's decoder in diffusers' form, drawing CLIP image vectors themselves (issue 40).

    pipe = UnclipDecoderPipeline.from_pretrained("assets/shapes/decoder")     # save_pretrained writes the same
    images = pipe(image_embeds, num_images_per_prompt=4, guidance_scale=3.0, generator=g).images

A latent diffusion pipeline of vae, unet and scheduler whose UNet (UNet2DConditionModel with Kandinsky 2.2's
`encoder_hid_dim_type="image_proj"` and `addition_embed_type="image"`) reads the vector through
`added_cond_kwargs={"image_embeds": ...}`: projected into context tokens for cross-attention and added to the
timestep embedding. No text encoder: the vectors come from the bundle's CLIP (an image's, a prior's, a slerp of
two). Classifier-free guidance: the unconditional branch sees an all-zero vector, as in training
(clipgpt_train/decoder.py drops 10 % of vectors to zeros).
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils.torch_utils import randn_tensor


class UnclipDecoderPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "unet->vae"

    def __init__(self, vae: AutoencoderKL, unet: UNet2DConditionModel, scheduler: KarrasDiffusionSchedulers):
        super().__init__()
        self.register_modules(vae=vae, unet=unet, scheduler=scheduler)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    @property
    def embed_dim(self) -> int:
        return int(self.unet.config.encoder_hid_dim)

    def check_inputs(self, image_embeds, num_images_per_prompt, guidance_scale, num_inference_steps, output_type):
        if not isinstance(image_embeds, torch.Tensor):
            raise TypeError(f"image_embeds must be a torch.Tensor (n, {self.embed_dim}), got "
                            f"{type(image_embeds).__name__}")
        if image_embeds.ndim != 2 or image_embeds.shape[1] != self.embed_dim or not len(image_embeds):
            raise ValueError(f"image_embeds must be (n, {self.embed_dim}) with n >= 1, got {tuple(image_embeds.shape)}")
        if not torch.isfinite(image_embeds).all():
            raise ValueError("image_embeds holds NaN or infinite values")
        if not (isinstance(num_images_per_prompt, int) and num_images_per_prompt >= 1):
            raise ValueError(f"num_images_per_prompt must be a whole number >= 1, got {num_images_per_prompt}")
        if not (isinstance(num_inference_steps, int) and num_inference_steps >= 1):
            raise ValueError(f"num_inference_steps must be a whole number >= 1, got {num_inference_steps}")
        if not float(guidance_scale) >= 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"output_type must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}")

    @torch.no_grad()
    def __call__(self, image_embeds: torch.Tensor, num_images_per_prompt: int = 1, guidance_scale: float = 3.0,
                 num_inference_steps: int = 12, generator: torch.Generator | None = None, latents=None,
                 output_type: str = "pil", return_dict: bool = True, callback_on_step_end=None):
        # 1. inputs: image_embeds (n, d), each drawn num_images_per_prompt times
        self.check_inputs(image_embeds, num_images_per_prompt, guidance_scale, num_inference_steps, output_type)
        device, dtype = self._execution_device, self.unet.dtype
        guided = guidance_scale > 1.0

        # 2. conditioning: (batch, d), and the all-zero vector before it for guidance (2 batch, d)
        embeds = image_embeds.to(device, dtype).repeat_interleave(num_images_per_prompt, dim=0)
        batch = len(embeds)
        if guided:
            embeds = torch.cat([torch.zeros_like(embeds), embeds])

        # 3. timesteps and the starting noise (batch, 4, h, w)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        size = self.unet.config.sample_size
        shape = (batch, self.unet.config.in_channels, size, size)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        latents = latents.to(device, dtype) * self.scheduler.init_noise_sigma

        # 4. denoise
        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            x = torch.cat([latents] * 2) if guided else latents
            x = self.scheduler.scale_model_input(x, t)
            pred = self.unet(x, t, encoder_hidden_states=None, added_cond_kwargs={"image_embeds": embeds}).sample
            if guided:
                pred_uncond, pred_cond = pred.chunk(2)
                pred = pred_uncond + guidance_scale * (pred_cond - pred_uncond)
            latents = self.scheduler.step(pred, t, latents, generator=generator).prev_sample
            if callback_on_step_end is not None:     # diffusers' convention: (pipe, step, timestep, tensors)
                latents = callback_on_step_end(self, i, t, {"latents": latents}).get("latents", latents)

        # 5. decode
        if output_type == "latent":
            image = latents
        else:
            image = self.vae.decode(latents / self.vae.config.scaling_factor).sample
            image = self.image_processor.postprocess(image, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)
