"""The digits zoo's configurations as plain data: importable without torch, so the model
registry (and `repro validate`) knows the zoo models' shapes without building them."""

RESOLUTION = 16
NUM_CLASSES = 10

# DDPM (Ho et al. 2020) training schedule, as in google/ddpm-cifar10-32.
NOISE_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
}

# clip_sample=False: a DDIM scheduler copied from the DDPM config inherits clip_sample=True,
# which clips x0 but keeps the unclipped epsilon, and breaks guided sampling unless every
# caller passes use_clipped_model_output=True. Without clipping, the plain
# `scheduler.step(eps, t, x).prev_sample` loop is the correct sampler.
DDIM_CONFIG = {**NOISE_SCHEDULE, "clip_sample": False, "set_alpha_to_one": True}

UNET_CONFIGS = {
    "digits-ddpm": {
        "sample_size": RESOLUTION,
        "in_channels": 1,
        "out_channels": 1,
        "block_out_channels": [32, 32, 64, 64],
        "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
        "layers_per_block": 2,
        "norm_num_groups": 16,
        "attention_head_dim": None,  # one head, as in google/ddpm-cifar10-32
    },
    "digits-cond": {
        "sample_size": RESOLUTION,
        "in_channels": 1,
        "out_channels": 1,
        "block_out_channels": [32, 32, 64, 64],
        "down_block_types": [
            "DownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "layers_per_block": 2,
        "norm_num_groups": 16,
        "attention_head_dim": 8,
        "cross_attention_dim": 64,
    },
    # a class-conditional DiT (adaLN-Zero, patch 2: 64 tokens); its label table has a null
    # row at index NUM_CLASSES, the same label ClassEncoder uses for guidance
    "digits-dit": {
        "sample_size": RESOLUTION,
        "in_channels": 1,
        "out_channels": 1,
        "patch_size": 2,
        "num_layers": 6,
        "num_attention_heads": 4,
        "attention_head_dim": 24,
        "num_embeds_ada_norm": NUM_CLASSES,
    },
}
