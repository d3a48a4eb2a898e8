"""Diffusion, apart from any network: the Gaussian forward process and the samplers that reverse it.

`process.GaussianDiffusion` holds the noise schedule and the closed forms (q_sample, the
posterior, the training loss); `samplers` turns any noise-predicting network into images
with DDPM's ancestral steps or DDIM's, for any number of steps.
"""
