import pytest
import torch
import torch.nn as nn
from peft.tuners.lora import LoraLayer

from diffhdr.config import ModelConfig
from diffhdr.model import DiffHDRModel
from diffhdr.runtime import Float8Linear, Float8TrainLinear, GELUProjection, merge_lora, use_gelu_epilogue
from diffhdr.tiny import resolve_backbone

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def _rowwise_fp8_available():
    """fp8 runs on CUDA in practice; on the CPU only torch builds whose _scaled_mm takes row-wise
    scales (2.13 and later; 2.11 takes per-tensor scales only) can check the arithmetic."""
    a = torch.ones(16, 16, device=DEVICE).to(torch.float8_e4m3fn)
    try:
        torch._scaled_mm(a, a.t(), scale_a=torch.ones(16, 1, device=DEVICE),
                         scale_b=torch.ones(1, 16, device=DEVICE), out_dtype=torch.bfloat16)
    except RuntimeError as e:
        pytest.skip(f"no row-wise fp8 matmul on {DEVICE} in torch {torch.__version__}: {str(e)[:80]}")


def reference(seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(128, 96).to(DEVICE, torch.bfloat16)
    x = torch.randn(4, 16, 128, dtype=torch.bfloat16, device=DEVICE)
    return lin, x


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.usefixtures("_rowwise_fp8_available")
def test_fp8_inference_linear_matches_bf16():
    lin, x = reference()
    y = Float8Linear(lin)(x)
    assert y.shape == (4, 16, 96) and y.dtype == torch.bfloat16
    assert rel(y, lin(x)) < 0.05  # e4m3: about 3 significant bits per value, errors average out


@pytest.mark.usefixtures("_rowwise_fp8_available")
def test_fp8_training_linear_forward_and_input_gradient():
    lin, x = reference(1)
    x.requires_grad_(True)
    fp8 = Float8TrainLinear(lin)
    y = fp8(x)
    assert rel(y, lin(x)) < 0.05
    gy = torch.randn_like(y)
    (dx,) = torch.autograd.grad(y, x, gy)
    x2 = x.detach().clone().requires_grad_(True)
    (dx_ref,) = torch.autograd.grad(lin(x2), x2, gy)
    assert rel(dx, dx_ref) < 0.05
    assert not any(p.requires_grad for p in fp8.parameters())  # frozen: no weight gradient


def tiny_transformer_and_inputs(lora: bool):
    m = DiffHDRModel.from_pretrained(resolve_backbone("tiny"), dtype=torch.float32)
    if lora:
        torch.manual_seed(0)
        m.add_lora(ModelConfig(lora_rank=4, lora_alpha=4.0))
        with torch.no_grad():  # B starts at zero: give the adapter something to fold
            for module in m.transformer.modules():
                if isinstance(module, LoraLayer):
                    module.lora_B["default"].weight.normal_(std=0.05)
    g = torch.Generator().manual_seed(0)
    inputs = dict(hidden_states=torch.randn(1, 16, 2, 16, 16, generator=g), timestep=torch.tensor([300.0]),
                  encoder_hidden_states=torch.randn(1, 8, 32, generator=g),
                  control_hidden_states=torch.randn(1, 96, 2, 16, 16, generator=g))
    return m.transformer.eval().to(DEVICE), {k: v.to(DEVICE) for k, v in inputs.items()} | {"return_dict": False}


@torch.no_grad()
def test_merge_lora_folds_the_adapter_and_unwraps_the_layers():
    transformer, inputs = tiny_transformer_and_inputs(lora=True)
    wrapped = sum(isinstance(m, LoraLayer) for m in transformer.modules())
    before = transformer(**inputs)[0]
    assert merge_lora(transformer) == wrapped > 0
    assert not any(isinstance(m, LoraLayer) for m in transformer.modules())
    assert type(transformer.blocks[0].ffn.net[0].proj) is nn.Linear
    assert torch.allclose(transformer(**inputs)[0], before, atol=1e-5)


@torch.no_grad()
def test_gelu_epilogue_is_the_ffn_it_replaces():
    """On a GPU this is cuBLASLt's bias + GELU epilogue, which must be the tanh form Wan uses."""
    transformer, inputs = tiny_transformer_and_inputs(lora=False)
    before = transformer(**inputs)[0]
    names = {n for n, _ in transformer.named_parameters()}
    assert use_gelu_epilogue(transformer) == len(transformer.blocks) + len(transformer.vace_blocks)
    assert isinstance(transformer.blocks[0].ffn.net[0], GELUProjection)
    assert {n for n, _ in transformer.named_parameters()} == names  # the weights keep their names
    assert torch.allclose(transformer(**inputs)[0], before, atol=1e-5)
    ffn, x = transformer.blocks[0].ffn, torch.randn(1, 40, transformer.config.num_attention_heads
                                                     * transformer.config.attention_head_dim, device=DEVICE)
    assert torch.allclose(torch.compile(ffn)(x), ffn(x), atol=1e-5)  # inductor keeps the fused op
