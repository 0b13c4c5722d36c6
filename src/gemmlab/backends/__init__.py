"""One module per backend, each exposing `matmul_2d(a, b, out)`: write the 2-D product a @ b into out.

The dispatch layer (gemmlab.dispatch) hands every kernel 2-D torch tensors that it has already
checked: same dtype, a supported device, fitting shapes, out contiguous and fresh. Inputs may have
any strides (transposed, sliced, stride-0 broadcast views). The registry of backends, with the
devices and dtypes each supports, is gemmlab.registry.
"""
