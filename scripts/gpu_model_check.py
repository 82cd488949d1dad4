"""Whole-model error of M2-BERT-80M with the Triton kernels (issue #4 check), on a GPU.

Usage on the device: PYTHONPATH=$PWD python3 scripts/gpu_model_check.py
Random-init M2-BERT-80M, L = 4096, batch 2, 1 and 12 layers: relative L2 error of the last
hidden states against the float32 PyTorch reference (TF32 off), for the PyTorch path under bf16
autocast, the Triton kernels under bf16 autocast, and the Triton kernels in float32 (tf32x3
FFT matmuls: PyTorch's default float32 matmul precision). And the model's own sensitivity: the
float32 reference with its embedding output perturbed by one bf16 rounding (relative noise
2^-9 per element), the error any bf16 implementation starts from.
"""

from __future__ import annotations

import torch

from m2bench.registry import create_model


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def jitter(_module, _inputs, out: torch.Tensor) -> torch.Tensor:
    """A forward hook: ``out`` times (1 + 2^-9 noise), one bf16 rounding's worth."""
    gen = torch.Generator(device=out.device).manual_seed(1)
    return out * (1 + 2**-9 * torch.randn(out.shape, device=out.device, generator=gen))


torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
L = 4096
for n_layers in (1, 12):
    torch.manual_seed(0)
    ref_model = create_model("m2_bert_80m", max_len=L, n_layers=n_layers).cuda().eval()
    tri_model = create_model("m2_bert_80m", max_len=L, n_layers=n_layers, kernel="triton")
    tri_model.load_state_dict(ref_model.state_dict())
    tri_model = tri_model.cuda().eval()
    ids = torch.randint(1000, 29000, (2, L), device="cuda")
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        ref = ref_model.hidden_states(batch).float()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            torch_bf16 = ref_model.hidden_states(batch)
            tri_bf16 = tri_model.hidden_states(batch)
        tri_fp32 = tri_model.hidden_states(batch)
        hook = ref_model.bert.embeddings.register_forward_hook(jitter)
        perturbed = ref_model.hidden_states(batch).float()
        hook.remove()
    assert torch.isfinite(tri_bf16).all()
    print(
        f"L={L} layers={n_layers}: vs fp32 torch reference: torch bf16 {rel(torch_bf16, ref):.4f}"
        f"  triton bf16 {rel(tri_bf16, ref):.4f}  triton fp32 {rel(tri_fp32, ref):.4f}"
        f"  (triton bf16 vs torch bf16 {rel(tri_bf16, torch_bf16):.4f}; fp32 reference with"
        f" one bf16 rounding of its embeddings {rel(perturbed, ref):.4f})"
    )
