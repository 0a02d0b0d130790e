"""Tiny random diffusers models built from config: the tests never touch the network."""

import contextlib
import os
import statistics
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from diffusers import DDIMScheduler, UNet2DConditionModel, UNet2DModel  # noqa: E402

torch.set_num_threads(1)  # tiny models: threads only add contention


def tiny_unet2d(seed: int = 0) -> UNet2DModel:
    """The google/ddpm-cifar10-32 block layout, shrunk."""
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        layers_per_block=2,
        block_out_channels=(8, 16, 16, 16),
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    ).eval()


def tiny_unet_cond(seed: int = 0, num_class_embeds: int | None = None) -> UNet2DConditionModel:
    """SD-like cross-attention layout, shrunk; optionally class-label conditioned."""
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(8, 16, 16),
        norm_num_groups=4,
        cross_attention_dim=8,
        attention_head_dim=2,
        num_class_embeds=num_class_embeds,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    ).eval()


def ddim(steps: int, **kwargs) -> DDIMScheduler:
    scheduler = DDIMScheduler(num_train_timesteps=1000, clip_sample=False, **kwargs)
    scheduler.set_timesteps(steps)
    return scheduler


@pytest.fixture
def unet2d():
    return tiny_unet2d()


@pytest.fixture
def unet_cond():
    return tiny_unet_cond()


def offline_clip_tokenizer(directory, max_length: int = 16):
    """A byte-level CLIP tokenizer with no merges, written to ``directory``: no download."""
    import json

    from transformers import CLIPTokenizer

    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    others = [b for b in range(256) if b not in printable]
    chars = [chr(c) for c in printable] + [chr(256 + i) for i in range(len(others))]
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(
        str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=max_length
    )


def tiny_sd_pipeline(directory, seed: int = 0):
    """A StableDiffusionPipeline of the real classes, tiny and random, built offline."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = offline_clip_tokenizer(directory)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=8,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=16,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).eval()
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8,),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        norm_num_groups=4,
        sample_size=16,
    ).eval()
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=tiny_unet_cond(seed),
        scheduler=DDIMScheduler(num_train_timesteps=1000, clip_sample=False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def tiny_open_clip():
    """A tiny random open_clip CLIP with its eval transform and tokenizer: no download."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=16,
        vision_cfg={"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        text_cfg={"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    )
    return (
        model,
        open_clip.image_transform(32, is_train=False),
        open_clip.SimpleTokenizer(context_length=16),
    )


def logged_runs(uri: str, experiment: str):
    """``mlflow.search_runs`` of ``experiment`` in the store at ``uri`` (a DataFrame), with
    MLflow's global tracking URI unset again afterwards."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    try:
        return mlflow.search_runs(experiment_names=[experiment])
    finally:
        mlflow.set_tracking_uri(None)


def error_lines(err: str) -> list[str]:
    """stderr's lines less the warnings validation prints (``warning: ...``; a suite with
    few seeds draws one): what must be one line on bad input."""
    return [line for line in err.strip().splitlines() if not line.startswith("warning: ")]


def assert_speedup_is_the_ratio_of_medians(row: dict, teacher: dict):
    """The measured speedup: the median of the teacher's timed loops over the row's, both
    from the seconds the rows report (a ratio the wrong way round, over another loop than the
    teacher's, fails)."""
    assert row["latency"]["median_s"] == statistics.median(row["latency"]["seconds"])
    assert len(row["latency"]["seconds"]) == len(teacher["latency"]["seconds"])
    assert row["measured_speedup"] == pytest.approx(
        statistics.median(teacher["latency"]["seconds"])
        / statistics.median(row["latency"]["seconds"]),
        rel=1e-12,
    )


@contextlib.contextmanager
def failing_mlflow_server():
    """A stand-in MLflow server whose ``/health`` answers and whose every API call fails with
    HTTP 503 (a server dying under load), for as long as the block runs: its URI and the list
    of ``(method, path)`` of the API calls it failed, in order."""
    failed = []

    class Failing(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            if self.path != "/health":
                failed.append((self.command, self.path))
            self.send_response(200 if self.path == "/health" else 503)
            self.end_headers()

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", failed
    finally:
        server.shutdown()
