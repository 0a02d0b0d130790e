"""Record the state-dict layout (key -> shape) of tiny original LDM-4-G and ADM models into
original_layouts.json, which tests/test_convert.py converts; and check, here, that converted
and original models agree numerically on random weights.

Needs checkouts of CompVis/latent-diffusion and openai/guided-diffusion (no package on the
registry) and einops:
    PYTHONPATH=LATENT_DIFFUSION:GUIDED_DIFFUSION:EINOPS python tests/data/original_layouts.py
"""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_convert import ADM_TINY, LDM_TINY, tiny_specs  # noqa: E402

from repro.models.convert import convert_adm, convert_ldm


def ldm_original():
    from ldm.modules.diffusionmodules.model import Decoder, Encoder
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    params = LDM_TINY["model"]["params"]
    stage = params["first_stage_config"]["params"]
    ae, classes = stage["ddconfig"], params["cond_stage_config"]["params"]
    parts = {
        "model.diffusion_model": UNetModel(**params["unet_config"]["params"]),
        "first_stage_model.encoder": Encoder(**ae),
        "first_stage_model.decoder": Decoder(**ae),
        "first_stage_model.quant_conv": torch.nn.Conv2d(ae["z_channels"], stage["embed_dim"], 1),
        "first_stage_model.post_quant_conv": torch.nn.Conv2d(
            stage["embed_dim"], ae["z_channels"], 1
        ),
        "first_stage_model.quantize.embedding": torch.nn.Embedding(
            stage["n_embed"], stage["embed_dim"]
        ),
        "cond_stage_model.embedding": torch.nn.Embedding(
            classes["n_classes"], classes["embed_dim"]
        ),
    }
    return parts, {f"{p}.{k}": v for p, m in parts.items() for k, v in m.state_dict().items()}


def adm_original():
    from guided_diffusion.unet import UNetModel

    unet = UNetModel(**ADM_TINY)
    return unet, unet.state_dict()


def main():
    torch.manual_seed(0)
    ldm_spec, adm_spec = tiny_specs()
    parts, ldm_state = ldm_original()
    adm, adm_state = adm_original()
    for module in (*parts.values(), adm):
        for p in module.parameters():  # zero-initialised output layers would hide mistakes
            p.data.normal_(0, 0.05)
    ldm_state = {f"{p}.{k}": v for p, m in parts.items() for k, v in m.state_dict().items()}
    adm_state = adm.state_dict()
    out = Path(__file__).with_name("original_layouts.json")
    out.write_text(
        json.dumps(
            {
                "ldm": {k: list(v.shape) for k, v in ldm_state.items()},
                "adm": {k: list(v.shape) for k, v in adm_state.items()},
            },
            indent=0,
        )
    )
    converted = convert_ldm(ldm_state, ldm_spec, LDM_TINY)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 500])
    labels = torch.tensor([1, 4])
    with torch.no_grad():
        context = parts["cond_stage_model.embedding"](labels[:, None])
        want = parts["model.diffusion_model"](x, t, context=context)
        got = converted["unet"](x, t, encoder_hidden_states=converted["class_embedder"](labels))
        print("LDM UNet max abs diff", (want - got.sample).abs().max().item())
        z = torch.randn(2, 3, 8, 8)
        decoder = parts["first_stage_model.decoder"]
        want = decoder(parts["first_stage_model.post_quant_conv"](z))
        got = converted["vqvae"].decode(z, force_not_quantize=True).sample
        print("VQ decoder max abs diff", (want - got).abs().max().item())
        unet = convert_adm(adm_state, adm_spec)["unet"]
        want = adm(x, t, y=labels)
        got = unet(x, t, class_labels=labels).sample
        print("ADM UNet max abs diff", (want - got).abs().max().item())


if __name__ == "__main__":
    main()
