import pytest
import torch
from safetensors.torch import load_file, save_file

from diffhdr.config import ModelConfig
from diffhdr.errors import InputError
from diffhdr.lora_io import export_lora, load_adapter, load_lora_file, save_adapter
from diffhdr.model import DiffHDRModel, discover_lora_targets
from diffhdr.tiny import resolve_backbone


def tiny_model():
    return DiffHDRModel.from_pretrained(resolve_backbone("tiny"), dtype=torch.float32)


def randomize_lora(transformer, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in transformer.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(1, 16, 2, 4, 4, generator=g),
        timestep=torch.tensor([500.0]),
        encoder_hidden_states=torch.randn(1, 8, 32, generator=g),
        control_hidden_states=torch.randn(1, 96, 2, 4, 4, generator=g),
        return_dict=False,
    )


def test_targets_are_discovered_not_hardcoded():
    m = tiny_model()
    main = discover_lora_targets(m.transformer, "main", ModelConfig().lora_target_suffixes)
    vace = discover_lora_targets(m.transformer, "vace", ModelConfig().lora_target_suffixes)
    assert len(main) == 4 * 10 and len(vace) == 2 * 10  # per block: 8 attention + 2 FFN linears
    assert all(n.startswith("blocks.") for n in main) and all(n.startswith("vace_blocks.") for n in vace)
    assert "blocks.0.attn1.to_out.0" in main and "blocks.0.ffn.net.0.proj" in main
    m.add_lora(ModelConfig(lora_rank=4, lora_alpha=4.0))
    assert not any(p.requires_grad for n, p in m.transformer.named_parameters() if n.startswith("vace_blocks."))


def test_adapter_save_load_round_trip(tmp_path):
    a = tiny_model()
    a.add_lora(ModelConfig(lora_rank=4, lora_alpha=8.0))
    randomize_lora(a.transformer)
    save_adapter(a.transformer, tmp_path)
    b = tiny_model()
    load_adapter(b.transformer, tmp_path)
    assert torch.equal(a.transformer(**inputs())[0], b.transformer(**inputs())[0])


@pytest.mark.parametrize("branch,tensors", [("main", 2 * 40), ("vace", 2 * 20)])
def test_diffusers_export_round_trips_through_load_lora_weights(tmp_path, branch, tensors):
    from diffusers import WanVACEPipeline

    a = tiny_model()
    a.add_lora(ModelConfig(lora_rank=4, lora_alpha=8.0, lora_branch=branch))  # alpha != rank: the scale must survive
    randomize_lora(a.transformer)
    n = export_lora(a.transformer, tmp_path / "pytorch_lora_weights.safetensors", "diffusers")
    assert n == tensors
    b = tiny_model()
    pipe = WanVACEPipeline(tokenizer=b.tokenizer, text_encoder=b.text_encoder, vae=b.vae,
                           transformer=b.transformer, scheduler=b.scheduler)
    pipe.load_lora_weights(str(tmp_path))
    out_a = a.transformer(**inputs())[0]
    out_b = b.transformer(**inputs())[0]
    assert not torch.allclose(out_b, tiny_model().transformer(**inputs())[0])  # the LoRA did something
    assert torch.allclose(out_a, out_b, atol=1e-5)


def test_comfyui_export_uses_wan_names(tmp_path):
    a = tiny_model()
    a.add_lora(ModelConfig(lora_rank=4, lora_alpha=4.0))
    export_lora(a.transformer, tmp_path / "comfy.safetensors", "comfyui")
    keys = load_file(tmp_path / "comfy.safetensors")
    assert "diffusion_model.blocks.0.self_attn.q.lora_A.weight" in keys
    assert "diffusion_model.blocks.3.ffn.2.lora_B.weight" in keys
    assert "diffusion_model.blocks.1.cross_attn.o.lora_A.weight" in keys


def test_comfyui_export_of_a_target_without_a_wan_name_says_so(tmp_path):
    from peft import LoraConfig

    a = tiny_model()
    a.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["proj_out"]))
    with pytest.raises(InputError, match="proj_out.lora_A.weight: no ComfyUI .Wan. name for this LoRA target"):
        export_lora(a.transformer, tmp_path / "comfy.safetensors", "comfyui")
    assert not (tmp_path / "comfy.safetensors").exists()


def release_state(transformer, rank=4, seed=1):
    """A LoRA in the authors' DiffSynth key layout for the tiny model's VACE blocks."""
    g = torch.Generator().manual_seed(seed)
    dims = {"self_attn.q": (128, 128), "self_attn.k": (128, 128), "self_attn.v": (128, 128),
            "self_attn.o": (128, 128), "cross_attn.q": (128, 128), "cross_attn.k": (128, 128),
            "cross_attn.v": (128, 128), "cross_attn.o": (128, 128), "ffn.0": (128, 256), "ffn.2": (256, 128)}
    state = {}
    for i in range(len(transformer.vace_blocks)):
        for name, (din, dout) in dims.items():
            state[f"vace_blocks.{i}.{name}.lora_A.default.weight"] = torch.randn(rank, din, generator=g) * 0.1
            state[f"vace_blocks.{i}.{name}.lora_B.default.weight"] = torch.randn(dout, rank, generator=g) * 0.1
    return state


def test_release_layout_loads_with_every_key_consumed(tmp_path):
    m = tiny_model()
    base_q = m.transformer.vace_blocks[1].attn2.to_q.weight.detach().clone()
    state = release_state(m.transformer)
    assert len(state) == 2 * 20  # 160 for the 14B model's 8 blocks
    save_file(state, tmp_path / "DiffHDR.safetensors")
    assert load_lora_file(m.transformer, tmp_path / "DiffHDR.safetensors") == 20
    # W x + B A x for one module, alpha = rank -> scale 1
    lin = m.transformer.vace_blocks[1].attn2.to_q
    x = torch.randn(3, 128)
    a = state["vace_blocks.1.cross_attn.q.lora_A.default.weight"]
    b = state["vace_blocks.1.cross_attn.q.lora_B.default.weight"]
    expected = x @ base_q.T + lin.base_layer.bias + x @ a.T @ b.T
    assert torch.allclose(lin(x), expected, atol=1e-5)


def test_a_lora_file_says_its_colour_mapping_or_nothing(tmp_path):
    from diffhdr.lora_io import file_color_mapping

    m = tiny_model()
    save_file(release_state(m.transformer), tmp_path / "DiffHDR.safetensors")
    assert file_color_mapping(tmp_path / "DiffHDR.safetensors") == {"gamma": 2.2, "M": 65536.0}  # by its keys
    m.add_lora(ModelConfig(lora_rank=4, lora_alpha=4.0))
    color = {"gamma": 2.2, "M": 1000.0, "base_model": "tiny", "lora_branch": "main", "profile": "spec"}
    export_lora(m.transformer, tmp_path / "comfy.safetensors", "comfyui", color)
    assert file_color_mapping(tmp_path / "comfy.safetensors") == color
    save_file(load_file(tmp_path / "comfy.safetensors"), tmp_path / "bare.safetensors")  # metadata dropped
    assert file_color_mapping(tmp_path / "bare.safetensors") is None


def test_release_layout_rejects_mismatches(tmp_path):
    m = tiny_model()
    state = release_state(m.transformer)
    state["vace_blocks.0.self_attn.q.lora_A.default.weight"] = torch.zeros(4, 64)
    save_file(state, tmp_path / "bad.safetensors")
    with pytest.raises(InputError, match="bad.safetensors: .*shape"):
        load_lora_file(tiny_model().transformer, tmp_path / "bad.safetensors")
    state = release_state(m.transformer)
    state["vace_blocks.0.self_attn.norm_q.lora_A.default.weight"] = torch.zeros(4, 128)
    save_file(state, tmp_path / "odd.safetensors")
    with pytest.raises(InputError, match="odd.safetensors: cannot place LoRA key 'vace_blocks.0.self_attn.norm_q"):
        load_lora_file(tiny_model().transformer, tmp_path / "odd.safetensors")


def wan_lora(transformer, layout: str, alpha: float | None, rank=4, seed=0) -> dict:
    """A LoRA of the main blocks as other tools write it: 'comfyui' (ComfyUI and its trainer:
    diffusion_model. + Wan names, lora_down/lora_up), 'musubi' (lora_unet_blocks_0_self_attn_q), or
    'diffusers' (transformer. + diffusers names, lora_A/lora_B); `alpha` None writes no alpha keys."""
    from diffhdr.lora_io import DIFFUSERS_TO_WAN

    g = torch.Generator().manual_seed(seed)
    state = {}
    for i, block in enumerate(transformer.blocks):
        for ours, wan in DIFFUSERS_TO_WAN.items():
            lin = block.get_submodule(ours)
            a = torch.randn(rank, lin.in_features, generator=g) * 0.1
            b = torch.randn(lin.out_features, rank, generator=g) * 0.1
            name = {"comfyui": f"diffusion_model.blocks.{i}.{wan}.", "diffusers": f"transformer.blocks.{i}.{ours}.",
                    "musubi": f"lora_unet_blocks_{i}_{wan.replace('.', '_')}."}[layout]
            down, up = ("lora_A", "lora_B") if layout == "diffusers" else ("lora_down", "lora_up")
            state |= {f"{name}{down}.weight": a, f"{name}{up}.weight": b}
            if alpha is not None:
                state[f"{name}alpha"] = torch.tensor(alpha)
    return state


def lora_deltas(transformer) -> dict[str, torch.Tensor]:
    """Each LoRA module's weight delta, scale included, keyed by our module name."""
    return {n: m.lora_B["default"].weight @ m.lora_A["default"].weight * m.scaling["default"]
            for n, m in transformer.named_modules() if hasattr(m, "lora_A") and "default" in m.lora_A}


@pytest.mark.parametrize("layout,alpha", [("comfyui", 8.0), ("comfyui", None), ("musubi", 2.0),  # musubi always writes alpha
                                          ("diffusers", None)])
def test_other_tools_lora_files_load_as_diffusers_reads_them(tmp_path, layout, alpha):
    from diffusers.loaders.lora_pipeline import WanLoraLoaderMixin

    m = tiny_model()
    state = wan_lora(m.transformer, layout, alpha)
    save_file(state, tmp_path / "lora.safetensors")
    assert load_lora_file(m.transformer, tmp_path / "lora.safetensors") == 10 * len(m.transformer.blocks)
    ours = lora_deltas(m.transformer)
    theirs = WanLoraLoaderMixin.lora_state_dict(str(tmp_path / "lora.safetensors"))  # diffusers' own reading
    theirs = {k.removeprefix("transformer."): v for k, v in theirs.items()}
    assert set(ours) == {k.rsplit(".lora_", 1)[0] for k in theirs}
    for module, delta in ours.items():
        expected = theirs[f"{module}.lora_B.weight"] @ theirs[f"{module}.lora_A.weight"]
        assert torch.allclose(delta, expected, atol=1e-6), module
    if alpha is not None:  # alpha/r honoured, not assumed 1
        a, b = (state[k] for k in state if k.startswith(("diffusion_model.blocks.0.self_attn.q.", "lora_unet_blocks_0_self_attn_q."))
                and "alpha" not in k)
        assert torch.allclose(ours["blocks.0.attn1.to_q"], b @ a * alpha / 4, atol=1e-6)


def test_a_lora_file_half_a_pair_says_which(tmp_path):
    m = tiny_model()
    state = wan_lora(m.transformer, "comfyui", 4.0)
    del state["diffusion_model.blocks.1.ffn.2.lora_up.weight"]
    save_file(state, tmp_path / "half.safetensors")
    with pytest.raises(InputError, match="half.safetensors: blocks.1.ffn.net.2 has no lora_B/lora_up"):
        load_lora_file(m.transformer, tmp_path / "half.safetensors")


def test_our_exports_load_back_in_both_layouts(tmp_path):
    m = tiny_model()
    m.add_lora(ModelConfig(lora_rank=4, lora_alpha=8.0))
    randomize_lora(m.transformer)
    want = lora_deltas(m.transformer)
    for layout in ("comfyui", "diffusers"):
        export_lora(m.transformer, tmp_path / f"{layout}.safetensors", layout)
        fresh = tiny_model()
        load_lora_file(fresh.transformer, tmp_path / f"{layout}.safetensors")
        got = lora_deltas(fresh.transformer)
        assert set(got) == set(want)
        assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want), layout


def test_a_lora_file_mixing_ranks_loads_each_at_its_own(tmp_path):
    m = tiny_model()
    state = wan_lora(m.transformer, "comfyui", 4.0)
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 128, generator=g), torch.randn(256, 2, generator=g)
    state |= {"diffusion_model.blocks.0.ffn.0.lora_down.weight": a, "diffusion_model.blocks.0.ffn.0.lora_up.weight": b,
              "diffusion_model.blocks.0.ffn.0.alpha": torch.tensor(1.0)}  # rank 2, alpha 1: scale 0.5
    save_file(state, tmp_path / "mixed.safetensors")
    load_lora_file(m.transformer, tmp_path / "mixed.safetensors")
    deltas = lora_deltas(m.transformer)
    assert torch.allclose(deltas["blocks.0.ffn.net.0.proj"], b @ a * 0.5, atol=1e-6)
    q = "diffusion_model.blocks.1.self_attn.q."
    assert torch.allclose(deltas["blocks.1.attn1.to_q"], state[q + "lora_up.weight"] @ state[q + "lora_down.weight"],
                          atol=1e-6)  # rank 4, alpha 4: scale 1
