"""NequIP (Batzner et al. 2022): E(3)-equivariant convolutions on irreps features. The pieces
MACE shares live here too: the equivariant message-passing base (``equivariant``) and the
half-list tensor-product convolution with its fused CPU kernel (``pair_tensor_product``,
``pair_kernel``)."""

from .model import NequIP

__all__ = ["NequIP"]
