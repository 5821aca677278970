"""The built-in tiny model: real diffusers/transformers classes, tiny configs, random weights.

It is written to disk in the `Wan2.1-VACE-14B-diffusers` layout and then loaded through the
same `from_pretrained` code as the real model, so the demo, the tests and the benchmarks all
exercise the real loading path without a download. `real_shape_configs()` gives the 14B
shapes for GPU benchmarks with random weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

TINY_TRANSFORMER = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=4,
    attention_head_dim=32,
    in_channels=16,
    out_channels=16,
    text_dim=32,
    freq_dim=32,
    ffn_dim=256,
    num_layers=4,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
    vace_layers=[0, 2],
    vace_in_channels=96,
)
TINY_VAE = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1, temperal_downsample=[False, True, True])
# DiffHDR-mini's untrained base (scripts/train_mini.sh trains its VAE and DiT): 9.3M + 3.2M parameters
# DiffHDR-mini: a VAE that downsamples by 4 (not Wan's 8: a small VAE trained in minutes reconstructs
# much better at 12x than at 48x compression), and DiT patches of 4x4 latents, so a token still
# covers 16x16 pixels; VACE's mask channels follow (16 + 16 + 4x4).
MINI_TRANSFORMER = TINY_TRANSFORMER | dict(patch_size=(1, 4, 4), num_attention_heads=5, attention_head_dim=64,
                                           freq_dim=64, ffn_dim=1024, num_layers=5, vace_layers=[0, 2],
                                           vace_in_channels=48)
MINI_VAE = dict(base_dim=32, z_dim=16, dim_mult=[1, 2, 4], num_res_blocks=1, temperal_downsample=[True, True])
MINI_DIR = Path(__file__).resolve().parent / "mini"  # the trained model, shipped with the package
TINY_UMT5 = dict(
    vocab_size=256, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
    relative_attention_num_buckets=8, relative_attention_max_distance=16, feed_forward_proj="gated-gelu",
    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
)
# Wan2.1-VACE-14B (its transformer/config.json)
REAL_TRANSFORMER = dict(
    patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=16, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
    vace_layers=[0, 5, 10, 15, 20, 25, 30, 35], vace_in_channels=96,
)
REAL_VAE = dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, temperal_downsample=[False, True, True])
# google/umt5-xxl's encoder, as Wan ships it (text_encoder/config.json)
REAL_UMT5 = dict(
    vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
    relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
)


def default_tiny_dir() -> Path:
    return Path(os.environ.get("DIFFHDR_TINY_DIR", Path.home() / ".cache" / "diffhdr" / "tiny-wan-vace"))


def _tokenizer():
    """A byte-level UMT5-style tokenizer built locally (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for b in range(32, 127):
        vocab.setdefault(chr(b), len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.decoder = decoders.Fuse()
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def write_tiny_model(path: str | Path, seed: int = 0, transformer: dict = TINY_TRANSFORMER, vae: dict = TINY_VAE,
                     text_encoder: dict = TINY_UMT5, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Path:
    """Create the tiny model directory (idempotent; atomic by renaming a finished temp folder);
    other configs give other random bases (MINI_*; REAL_* with device="cuda", dtype=torch.bfloat16
    writes a random Wan2.1-VACE-14B of the real shapes in a minute instead of an hour on the CPU)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanVACETransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    path = Path(path)
    if (path / "model_index.json").is_file():
        return path
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.manual_seed(seed)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            WanVACETransformer3DModel(**transformer).save_pretrained(tmp / "transformer")
            AutoencoderKLWan(**vae).float().save_pretrained(tmp / "vae")  # Wan's VAE ships in float32
            UMT5EncoderModel(UMT5Config(**text_encoder)).save_pretrained(tmp / "text_encoder")
    finally:
        torch.set_default_dtype(old)
    _tokenizer().save_pretrained(tmp / "tokenizer")
    UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0).save_pretrained(
        tmp / "scheduler"
    )
    (tmp / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "WanVACEPipeline",
                "_diffusers_version": "0.37.0",
                "scheduler": ["diffusers", "UniPCMultistepScheduler"],
                "text_encoder": ["transformers", "UMT5EncoderModel"],
                "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
                "transformer": ["diffusers", "WanVACETransformer3DModel"],
                "vae": ["diffusers", "AutoencoderKLWan"],
            },
            indent=2,
        )
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, path)
    except OSError:  # another process finished first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return path


BUILT_IN = ("tiny", "mini")  # backbone names resolve_backbone knows: stored by name, not by this machine's path


def resolve_backbone(backbone: str) -> Path:
    """'tiny' -> the built-in tiny model directory (written on first use); 'mini' -> the shipped
    DiffHDR-mini; else the path itself."""
    if backbone == "tiny":
        return write_tiny_model(default_tiny_dir())
    if backbone == "mini":
        return MINI_DIR
    return Path(backbone)


def write_tiny_captioner(path: str | Path, seed: int = 0) -> Path:
    """A tiny random Qwen3-VL with a locally built tokenizer, chat template and processor, saved in
    the layout of Qwen/Qwen3-VL-2B-Instruct. Its answers are nonsense; the plumbing is real.
    Needs torchvision (the Qwen3-VL processor's video half imports it)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    path = Path(path)
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
               "<|image_pad|>", "<|video_pad|>"]
    vocab = {t: i for i, t in enumerate(special)}
    for ch in [chr(b) for b in range(32, 127)] + ["\n"]:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        additional_special_tokens=special[1:])
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}"
                "{% endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    grid = dict(patch_size=16, temporal_patch_size=2, merge_size=2)
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(**grid, min_pixels=32 * 32, max_pixels=64 * 64),
        tokenizer=tokenizer, video_processor=Qwen3VLVideoProcessor(**grid), chat_template=template)
    config = Qwen3VLConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=1024,
                         rope_scaling={"rope_type": "default", "mrope_section": [2, 3, 3], "mrope_interleaved": True}),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                           deepstack_visual_indexes=[0]),
        image_token_id=vocab["<|image_pad|>"], video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"], vision_end_token_id=vocab["<|vision_end|>"])
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config)
    model.generation_config.pad_token_id = vocab["<|endoftext|>"]
    model.generation_config.eos_token_id = vocab["<|im_end|>"]
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
