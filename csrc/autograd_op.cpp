// gemmlab::native_product(Tensor a, Tensor b, str kernel) -> Tensor: the dispatch core's product as
// a PyTorch operator defined in C++, so autograd, torch.compile and other tracers see one op and no
// Python runs on the way to the kernel (a Python custom op costs tens of microseconds with grad).
//
// a @ b with torch.matmul's semantics on the named kernel of the core's table (`cpp`, `torch`, and
// whichever compiled backends registered theirs). Implementations:
//   CPU, CUDA  the core (dispatch.cpp: checks, shapes, output, kernel; CUDA only for `torch`);
//   Meta       the result's shape only, with symbolic sizes (FakeTensor, torch.compile);
//   Autograd   a 2-D or equal-batch 3-D product is a node whose backward calls this op again,
//              grad @ b^H and a^H @ grad on the same kernel (so higher derivatives work too);
//              other shapes are brought to those with autograd-aware views first, as
//              gemmlab.dispatch._matmul_tensors does (1-D promotion, batch broadcasting).
//
// gemmlab::native_linear(Tensor x, Tensor weight, Tensor? bias, str kernel) -> Tensor: torch.nn.Linear's
// x @ weight.T + bias with the product on the named kernel, as one op and one autograd node
// (gemmlab.nn.Linear's forward). The bias is added into the product's output inside the op, and its
// gradient (grad summed over rows) comes from the same node: no separate add, transpose view or
// AddBackward node per layer, which at batch 64 cost about as much as the layer's small products.

#include <torch/extension.h>

#include <ATen/ExpandUtils.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <string>

#include "dispatch.h"

namespace gemmlab {
namespace {

using ProductSignature = at::Tensor(const at::Tensor&, const at::Tensor&, c10::string_view);

const c10::TypedOperatorHandle<ProductSignature>& native_product_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("gemmlab::native_product", "").typed<ProductSignature>();
  return op;
}

int kernel_for(c10::string_view name) {
  const int id = kernel_id(std::string(name));
  TORCH_CHECK_VALUE(id >= 0, "gemmlab::native_product: no native kernel is registered as '", name,
                    "' (its backend registers it when it first loads)");
  return id;
}

at::Tensor product_on_device(const at::Tensor& a, const at::Tensor& b, c10::string_view kernel) {
  return product(a, b, kernel_for(kernel));
}

// torch.matmul's result shape, in symbolic sizes; raises for operands that do not fit.
c10::SymDimVector result_shape(const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK_VALUE(a.dim() > 0 && b.dim() > 0, "gemmlab::native_product needs operands with at least 1 dimension; "
                    "got shapes ", a.sym_sizes(), " and ", b.sym_sizes());
  TORCH_CHECK_TYPE(a.scalar_type() == b.scalar_type(), "gemmlab::native_product: operands have different dtypes (",
                   a.scalar_type(), " and ", b.scalar_type(), ")");
  const c10::SymIntArrayRef as = a.sym_sizes(), bs = b.sym_sizes();
  const int64_t da = a.dim(), db = b.dim();
  TORCH_CHECK_VALUE(as[da - 1] == bs[db == 1 ? 0 : db - 2], "gemmlab::native_product: inner dimensions differ; got "
                    "shapes ", as, " and ", bs);
  c10::SymDimVector shape =
      at::infer_size_symdimvector(as.slice(0, std::max<int64_t>(da - 2, 0)), bs.slice(0, std::max<int64_t>(db - 2, 0)));
  if (da > 1) shape.push_back(as[da - 2]);
  if (db > 1) shape.push_back(bs[db - 1]);
  return shape;
}

at::Tensor product_meta(const at::Tensor& a, const at::Tensor& b, c10::string_view kernel) {
  kernel_for(kernel);
  return at::empty_symint(result_shape(a, b), a.options());
}

// Whether a matrix (or batch of matrices) is held column-major: the transpose of a row-major one.
bool transposed(const at::Tensor& t) {
  const int64_t d = t.dim();
  // (Symbolic sizes under torch.compile: the comparisons guard on them.)
  return t.sym_size(d - 2) > 1 && t.sym_size(d - 1) > 1 && t.sym_stride(d - 2) == 1 && t.sym_stride(d - 1) != 1;
}

// A 2-D or equal-batch 3-D product as an autograd node.
struct ProductFunction : public torch::autograd::Function<ProductFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& a, const at::Tensor& b,
                            c10::string_view kernel) {
    // Each gradient needs only the other operand: grad_a = grad @ b^H, grad_b = a^H @ grad.
    ctx->save_for_backward({b.requires_grad() ? a : at::Tensor(), a.requires_grad() ? b : at::Tensor()});
    ctx->saved_data["kernel"] = std::string(kernel);
    ctx->saved_data["a_transposed"] = transposed(a);
    ctx->saved_data["b_transposed"] = transposed(b);
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return native_product_op().call(a, b, kernel);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const std::string& kernel = ctx->saved_data["kernel"].toStringRef();
    const at::Tensor& grad = grads[0];
    // Through the op itself (its Autograd kernel, when the backward is being differentiated too);
    // .mH() is .mT() for real dtypes, the conjugate transpose (PyTorch's convention) for complex.
    // A gradient is computed in its operand's layout: for an operand held transposed (the weight
    // of a layer, W.T) as the transpose of a row-major product, so that accumulating it into the
    // parameter needs no copy (that copy cost more than the product: 30 us of a 90 us step).
    at::Tensor grad_a, grad_b;
    if (ctx->needs_input_grad(0)) {
      const at::Tensor& b = saved[1];
      grad_a = ctx->saved_data["a_transposed"].toBool() ? native_product_op().call(b.conj(), grad.mT(), kernel).mT()
                                                         : native_product_op().call(grad, b.mH(), kernel);
    }
    if (ctx->needs_input_grad(1)) {
      const at::Tensor& a = saved[0];
      grad_b = ctx->saved_data["b_transposed"].toBool() ? native_product_op().call(grad.mT(), a.conj(), kernel).mT()
                                                         : native_product_op().call(a.mH(), grad, kernel);
    }
    return {grad_a, grad_b, at::Tensor()};
  }
};

// --- native_linear --------------------------------------------------------------------------------

using LinearSignature = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                   c10::string_view);

const c10::TypedOperatorHandle<LinearSignature>& native_linear_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("gemmlab::native_linear", "").typed<LinearSignature>();
  return op;
}

// torch.nn.Linear's argument rules; raises naming the shapes and dtypes.
void check_linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK_VALUE(weight.dim() == 2, "gemmlab::native_linear: weight must be 2-D (out_features, in_features); "
                    "got shape ", weight.sym_sizes());
  TORCH_CHECK_VALUE(x.dim() >= 1 && x.sym_size(-1) == weight.sym_size(1), "gemmlab::native_linear: input of shape ",
                    x.sym_sizes(), " does not fit weight of shape ", weight.sym_sizes(), " (its last dimension must be ",
                    "in_features)");
  TORCH_CHECK_TYPE(x.scalar_type() == weight.scalar_type(), "gemmlab::native_linear: input and weight have different "
                   "dtypes (", x.scalar_type(), " and ", weight.scalar_type(), ")");
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->sym_size(0) == weight.sym_size(0), "gemmlab::native_linear: bias "
                      "of shape ", bias->sym_sizes(), " does not fit weight of shape ", weight.sym_sizes(),
                      " (it must be (out_features,))");
    TORCH_CHECK_TYPE(bias->scalar_type() == weight.scalar_type(), "gemmlab::native_linear: bias and weight have "
                     "different dtypes (", bias->scalar_type(), " and ", weight.scalar_type(), ")");
  }
}

at::Tensor linear_on_device(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                            c10::string_view kernel) {
  check_linear(x, weight, bias);
  at::Tensor y = product(x, weight.t(), kernel_for(kernel));
  if (bias.has_value() && bias->defined()) y.add_(*bias);
  return y;
}

at::Tensor linear_meta(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                       c10::string_view kernel) {
  kernel_for(kernel);
  check_linear(x, weight, bias);
  c10::SymDimVector shape(x.sym_sizes().begin(), x.sym_sizes().end() - 1);
  shape.push_back(weight.sym_size(0));
  return at::empty_symint(shape, x.options());
}

// A 2-D layer as an autograd node: grad_x = grad @ conj(W), grad_W = grad^T @ conj(x) (in W's own
// row-major layout), grad_bias = grad summed over rows; each product on the same kernel, through
// native_product so that it is differentiable again.
struct LinearFunction : public torch::autograd::Function<LinearFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, c10::string_view kernel) {
    ctx->save_for_backward({weight.requires_grad() ? x : at::Tensor(), x.requires_grad() ? weight : at::Tensor()});
    ctx->saved_data["kernel"] = std::string(kernel);
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return native_linear_op().call(x, weight, bias, kernel);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const std::string& kernel = ctx->saved_data["kernel"].toStringRef();
    const at::Tensor& grad = grads[0];
    at::Tensor grad_x, grad_weight, grad_bias;
    if (ctx->needs_input_grad(0)) grad_x = native_product_op().call(grad, saved[1].conj(), kernel);
    if (ctx->needs_input_grad(1)) grad_weight = native_product_op().call(grad.mT(), saved[0].conj(), kernel);
    // (needs_input_grad counts the tensor inputs only: without a bias there is no third.)
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2)) grad_bias = grad.sum(0);
    return {grad_x, grad_weight, grad_bias, at::Tensor()};
  }
};

at::Tensor linear_autograd(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                           c10::string_view kernel) {
  const bool has_bias = bias.has_value() && bias->defined();
  if (!at::GradMode::is_enabled() ||
      !(x.requires_grad() || weight.requires_grad() || (has_bias && bias->requires_grad()))) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return native_linear_op().call(x, weight, bias, kernel);
  }
  if (x.dim() == 2) return LinearFunction::apply(x, weight, bias, kernel);  // (the op checks its arguments)
  check_linear(x, weight, bias);  // before the views below could fail with a less helpful message
  // (*, in) -> (rows, in): a 1-D input is one row, leading dimensions fold into rows.
  const at::Tensor rows = x.dim() == 1 ? x.unsqueeze(0) : x.reshape_symint({-1, x.sym_size(-1)});
  const at::Tensor y = LinearFunction::apply(rows, weight, bias, kernel);
  if (x.dim() == 1) return y.squeeze(0);
  c10::SymDimVector shape(x.sym_sizes().begin(), x.sym_sizes().end() - 1);
  shape.push_back(weight.sym_size(0));
  return y.reshape_symint(shape);
}

at::Tensor product_autograd(const at::Tensor& a, const at::Tensor& b, c10::string_view kernel) {
  if (!at::GradMode::is_enabled() || !(a.requires_grad() || b.requires_grad())) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;  // nothing to record: straight to the core
    return native_product_op().call(a, b, kernel);
  }
  const int64_t da = a.dim(), db = b.dim();
  if ((da == 2 && db == 2) || (da == 3 && db == 3 && a.sym_size(0) == b.sym_size(0))) {
    return ProductFunction::apply(a, b, kernel);
  }
  result_shape(a, b);  // the checks, before any view could fail with a less helpful message
  const at::Tensor a2 = da == 1 ? a.unsqueeze(0) : a;    // (k,) -> (1, k)
  const at::Tensor b2 = db == 1 ? b.unsqueeze(-1) : b;   // (k,) -> (k, 1)
  const c10::SymInt m = a2.sym_size(-2), k = a2.sym_size(-1), n = b2.sym_size(-1);
  c10::SymDimVector lead;
  at::Tensor x, y;
  if (b2.dim() == 2) {  // every batch entry of a meets the same b: a's batch folds into rows
    lead.assign(a2.sym_sizes().begin(), a2.sym_sizes().end() - 2);
    c10::SymInt rows = m;
    for (const c10::SymInt& s : lead) rows = rows * s;
    x = a2.reshape_symint({rows, k});
    y = b2;
  } else {
    lead = at::infer_size_symdimvector(a2.sym_sizes().slice(0, a2.dim() - 2), b2.sym_sizes().slice(0, b2.dim() - 2));
    c10::SymInt count = 1;
    for (const c10::SymInt& s : lead) count = count * s;
    c10::SymDimVector shape_a(lead), shape_b(lead);
    shape_a.append({m, k});
    shape_b.append({k, n});
    x = a2.expand_symint(shape_a).reshape_symint({count, m, k});
    y = b2.expand_symint(shape_b).reshape_symint({count, k, n});
  }
  c10::SymDimVector out_shape(lead);
  out_shape.append({m, n});
  at::Tensor out = ProductFunction::apply(x, y, kernel).reshape_symint(out_shape);
  if (da == 1) out = out.squeeze(-2);
  if (db == 1) out = out.squeeze(-1);
  return out;
}

}  // namespace

at::Tensor differentiable_product(const at::Tensor& a, const at::Tensor& b, const std::string& kernel) {
  return native_product_op().call(a, b, kernel);
}

}  // namespace gemmlab

TORCH_LIBRARY(gemmlab, m) {
  m.def("native_product(Tensor a, Tensor b, str kernel) -> Tensor", {at::Tag::pt2_compliant_tag});
  m.def("native_linear(Tensor x, Tensor weight, Tensor? bias, str kernel) -> Tensor", {at::Tag::pt2_compliant_tag});
}

// Only the `torch` kernel runs on CUDA (the core refuses the others there, naming the device).
TORCH_LIBRARY_IMPL(gemmlab, CPU, m) {
  m.impl("native_product", &gemmlab::product_on_device);
  m.impl("native_linear", &gemmlab::linear_on_device);
}
TORCH_LIBRARY_IMPL(gemmlab, CUDA, m) {
  m.impl("native_product", &gemmlab::product_on_device);
  m.impl("native_linear", &gemmlab::linear_on_device);
}
TORCH_LIBRARY_IMPL(gemmlab, Meta, m) {
  m.impl("native_product", &gemmlab::product_meta);
  m.impl("native_linear", &gemmlab::linear_meta);
}
TORCH_LIBRARY_IMPL(gemmlab, Autograd, m) {
  m.impl("native_product", &gemmlab::product_autograd);
  m.impl("native_linear", &gemmlab::linear_autograd);
}
