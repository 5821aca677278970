import pytest
import torch
import torch.nn as nn

from diffhdr.runtime import Float8Linear, Float8TrainLinear

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
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


def test_fp8_inference_linear_matches_bf16():
    lin, x = reference()
    y = Float8Linear(lin)(x)
    assert y.shape == (4, 16, 96) and y.dtype == torch.bfloat16
    assert rel(y, lin(x)) < 0.05  # e4m3: about 3 significant bits per value, errors average out


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
