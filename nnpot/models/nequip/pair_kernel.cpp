// The message sum of NequIP's convolution over a half pair list, fused, for the CPU.
//
// Compiled at first use by pair_kernel.py (torch.utils.cpp_extension); the formulas and the
// layouts are those of PairTensorProduct (pair_tensor_product.py):
//
//   out[i] += w_p ⊙ (B_p x[j])                 to i = first[p],  from j = second[p]
//   out[j] += cp ⊙ w_p ⊙ (B_p (rp ⊙ x[i]))      the reverse message (mirrored harmonics)
//
// x [N, R, U] (rows R: input components of one channel, U: channels), B [P, C, R] (columns C:
// output components), w [P, K, U] one weight per path (K paths) and channel, column_path [C]
// the path of each column (w_p above is w[p, column_path[c]] in column c), rp [R] and cp [C]
// the parities (±1) of rows and columns.
// Each output column couples to the rows of one input irrep only (one instruction per output
// irrep): row_range [C, 2] gives them, [begin, end), and B's other entries (zero by
// construction) are neither read nor given a gradient.
// The torch version of this sum writes and reads [P, C, U] messages about sixteen times per
// direction and layer (gather, product, weights, scatter, and their backward); here each pair
// is done in one pass with its small blocks in cache. Threads take pairs in ranges and add
// into their own copy of the atom-sized output, summed at the end (no atomics).

// ATen and the operator registry only: torch/extension.h (pybind11 and the C++ frontend) would
// triple the first-use compile time (about 50 s against 16 s here).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

namespace {

struct Sizes {
  int64_t n_atoms, n_pairs, rows, columns, channels, paths;
};

// Add each thread's [n] buffer into out.
template <typename T>
void sum_buffers(const at::Tensor& buffers, T* out, int64_t n) {
  const int64_t threads = buffers.size(0);
  const T* data = buffers.data_ptr<T>();
  at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t t = 0; t < threads; ++t)
      for (int64_t k = begin; k < end; ++k) out[k] += data[t * n + k];
  });
}

template <typename T>
void forward_kernel(const T* x, const T* B, const T* w, const int64_t* first,
                    const int64_t* second, const T* rp, const T* cp, const int64_t* row_range,
                    const int64_t* column_path, T* buffers, Sizes s) {
  const int64_t R = s.rows, C = s.columns, U = s.channels, K = s.paths, atom_size = C * U;
  at::parallel_for(0, s.n_pairs, 256, [&](int64_t begin, int64_t end) {
    T* out = buffers + at::get_thread_num() * s.n_atoms * atom_size;
    std::vector<T> z(2 * U);
    T* z1 = z.data();
    T* z2 = z1 + U;
    for (int64_t p = begin; p < end; ++p) {
      const int64_t i = first[p], j = second[p];
      const T* xj = x + j * R * U;
      const T* xi = x + i * R * U;
      for (int64_t c = 0; c < C; ++c) {
        const T* b = B + (p * C + c) * R;
        const T* wc = w + (p * K + column_path[c]) * U;
        for (int64_t u = 0; u < U; ++u) z1[u] = z2[u] = T(0);
        for (int64_t r = row_range[2 * c]; r < row_range[2 * c + 1]; ++r) {
          const T forward = b[r], reverse = b[r] * rp[r] * cp[c];
          const T* xjr = xj + r * U;
          const T* xir = xi + r * U;
          for (int64_t u = 0; u < U; ++u) {
            z1[u] += forward * xjr[u];
            z2[u] += reverse * xir[u];
          }
        }
        T* oi = out + i * atom_size + c * U;
        T* oj = out + j * atom_size + c * U;
        for (int64_t u = 0; u < U; ++u) {
          oi[u] += wc[u] * z1[u];
          oj[u] += wc[u] * z2[u];
        }
      }
    }
  });
}

// grad [N, C, U] of the output → grad_x [N, R, U] (into per-thread buffers), grad_B [P, C, R]
// and grad_w [P, K, U] (each pair writes its own rows: no buffers needed; zeroed by the
// caller, as the columns of one path add up).
template <typename T>
void backward_kernel(const T* grad, const T* x, const T* B, const T* w, const int64_t* first,
                     const int64_t* second, const T* rp, const T* cp,
                     const int64_t* row_range, const int64_t* column_path,
                     T* grad_x_buffers, T* grad_B, T* grad_w, Sizes s) {
  const int64_t R = s.rows, C = s.columns, U = s.channels, K = s.paths;
  at::parallel_for(0, s.n_pairs, 256, [&](int64_t begin, int64_t end) {
    T* grad_x = grad_x_buffers + at::get_thread_num() * s.n_atoms * R * U;
    std::vector<T> scratch(4 * U + 2 * R * U);
    T* z1 = scratch.data();   // B x[j]           (forward message before the weights)
    T* z2 = z1 + U;           // B (rp ⊙ x[i])    (reverse)
    T* a1 = z2 + U;           // grad ⊙ w at i
    T* a2 = a1 + U;           // cp · grad ⊙ w at j
    T* gxj = a2 + U;          // [R, U] gradient for x[j]
    T* gxi = gxj + R * U;     // [R, U] gradient for rp ⊙ x[i]
    for (int64_t p = begin; p < end; ++p) {
      const int64_t i = first[p], j = second[p];
      const T* xj = x + j * R * U;
      const T* xi = x + i * R * U;
      const T* gi = grad + i * C * U;
      const T* gj = grad + j * C * U;
      for (int64_t k = 0; k < 2 * R * U; ++k) gxj[k] = T(0);
      for (int64_t c = 0; c < C; ++c) {
        const T* b = B + (p * C + c) * R;
        const T* wc = w + (p * K + column_path[c]) * U;
        const T sign = cp[c];
        const int64_t r0 = row_range[2 * c], r1 = row_range[2 * c + 1];
        for (int64_t u = 0; u < U; ++u) z1[u] = z2[u] = T(0);
        for (int64_t r = r0; r < r1; ++r) {
          const T* xjr = xj + r * U;
          const T* xir = xi + r * U;
          const T br = b[r], brp = b[r] * rp[r];
          for (int64_t u = 0; u < U; ++u) {
            z1[u] += br * xjr[u];
            z2[u] += brp * xir[u];
          }
        }
        T* gw = grad_w + (p * K + column_path[c]) * U;
        const T* gic = gi + c * U;
        const T* gjc = gj + c * U;
        for (int64_t u = 0; u < U; ++u) {
          const T g2 = sign * gjc[u];
          gw[u] += gic[u] * z1[u] + g2 * z2[u];
          a1[u] = gic[u] * wc[u];
          a2[u] = g2 * wc[u];
        }
        T* gb = grad_B + (p * C + c) * R;
        for (int64_t r = 0; r < R; ++r) gb[r] = T(0);
        for (int64_t r = r0; r < r1; ++r) {
          const T* xjr = xj + r * U;
          const T* xir = xi + r * U;
          T* gxjr = gxj + r * U;
          T* gxir = gxi + r * U;
          const T br = b[r];
          T from_j = T(0), from_i = T(0);
          // a sum over channels: simd lets the compiler reorder it (vectorise)
          #pragma omp simd reduction(+ : from_j, from_i)
          for (int64_t u = 0; u < U; ++u) {
            from_j += a1[u] * xjr[u];
            from_i += a2[u] * xir[u];
            gxjr[u] += br * a1[u];
            gxir[u] += br * a2[u];
          }
          gb[r] = from_j + rp[r] * from_i;
        }
      }
      T* outj = grad_x + j * R * U;
      T* outi = grad_x + i * R * U;
      for (int64_t r = 0; r < R; ++r)
        for (int64_t u = 0; u < U; ++u) {
          outj[r * U + u] += gxj[r * U + u];
          outi[r * U + u] += rp[r] * gxi[r * U + u];
        }
    }
  });
}

Sizes check(const at::Tensor& x, const at::Tensor& B, const at::Tensor& w,
            const at::Tensor& first, const at::Tensor& second, const at::Tensor& rp,
            const at::Tensor& cp, const at::Tensor& row_range,
            const at::Tensor& column_path) {
  TORCH_CHECK(x.dim() == 3 && B.dim() == 3 && w.dim() == 3, "x, B and w must be 3-d");
  Sizes s{x.size(0), B.size(0), x.size(1), B.size(1), x.size(2), w.size(1)};
  TORCH_CHECK(B.size(2) == s.rows && w.size(0) == s.n_pairs && w.size(2) == s.channels,
              "shapes of x, B and w do not match");
  TORCH_CHECK(first.numel() == s.n_pairs && second.numel() == s.n_pairs,
              "one first and one second index per pair");
  TORCH_CHECK(rp.numel() == s.rows && cp.numel() == s.columns, "one parity per row and column");
  TORCH_CHECK(row_range.scalar_type() == at::kLong && row_range.is_contiguous() &&
              row_range.numel() == 2 * s.columns, "one [begin, end) row range per column");
  const int64_t* range = row_range.data_ptr<int64_t>();
  for (int64_t c = 0; c < s.columns; ++c)
    TORCH_CHECK(0 <= range[2 * c] && range[2 * c] <= range[2 * c + 1] &&
                range[2 * c + 1] <= s.rows, "row range out of bounds");
  TORCH_CHECK(column_path.scalar_type() == at::kLong && column_path.is_contiguous() &&
              column_path.numel() == s.columns, "one path per column");
  const int64_t* path = column_path.data_ptr<int64_t>();
  for (int64_t c = 0; c < s.columns; ++c)
    TORCH_CHECK(0 <= path[c] && path[c] < s.paths, "column path out of bounds");
  for (const auto* t : {&x, &B, &w, &rp, &cp})
    TORCH_CHECK(t->is_contiguous() && t->device().is_cpu() && t->scalar_type() == x.scalar_type(),
                "contiguous CPU tensors of one dtype expected");
  TORCH_CHECK(first.scalar_type() == at::kLong && second.scalar_type() == at::kLong &&
              first.is_contiguous() && second.is_contiguous(), "int64 contiguous indices expected");
  return s;
}

at::Tensor pair_messages(at::Tensor x, at::Tensor B, at::Tensor w, at::Tensor first,
                         at::Tensor second, at::Tensor rp, at::Tensor cp, at::Tensor row_range,
                         at::Tensor column_path) {
  const Sizes s = check(x, B, w, first, second, rp, cp, row_range, column_path);
  const int64_t n = s.n_atoms * s.columns * s.channels;
  auto buffers = at::zeros({at::get_num_threads(), n}, x.options());
  auto out = at::zeros({s.n_atoms, s.columns, s.channels}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pair_messages", [&] {
    forward_kernel<scalar_t>(x.data_ptr<scalar_t>(), B.data_ptr<scalar_t>(),
                             w.data_ptr<scalar_t>(), first.data_ptr<int64_t>(),
                             second.data_ptr<int64_t>(), rp.data_ptr<scalar_t>(),
                             cp.data_ptr<scalar_t>(), row_range.data_ptr<int64_t>(),
                             column_path.data_ptr<int64_t>(), buffers.data_ptr<scalar_t>(), s);
    sum_buffers<scalar_t>(buffers, out.data_ptr<scalar_t>(), n);
  });
  return out;
}

std::vector<at::Tensor> pair_messages_backward(at::Tensor grad, at::Tensor x, at::Tensor B,
                                               at::Tensor w, at::Tensor first, at::Tensor second,
                                               at::Tensor rp, at::Tensor cp, at::Tensor row_range,
                                               at::Tensor column_path) {
  const Sizes s = check(x, B, w, first, second, rp, cp, row_range, column_path);
  TORCH_CHECK(grad.is_contiguous() && grad.scalar_type() == x.scalar_type() &&
              grad.size(0) == s.n_atoms && grad.size(1) == s.columns &&
              grad.size(2) == s.channels, "grad must be a contiguous [N, C, U] tensor");
  const int64_t n = s.n_atoms * s.rows * s.channels;
  auto buffers = at::zeros({at::get_num_threads(), n}, x.options());
  auto grad_x = at::zeros_like(x);
  auto grad_B = at::empty_like(B);
  auto grad_w = at::zeros_like(w);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pair_messages_backward", [&] {
    backward_kernel<scalar_t>(grad.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                              B.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                              first.data_ptr<int64_t>(), second.data_ptr<int64_t>(),
                              rp.data_ptr<scalar_t>(), cp.data_ptr<scalar_t>(),
                              row_range.data_ptr<int64_t>(), column_path.data_ptr<int64_t>(),
                              buffers.data_ptr<scalar_t>(), grad_B.data_ptr<scalar_t>(),
                              grad_w.data_ptr<scalar_t>(), s);
    sum_buffers<scalar_t>(buffers, grad_x.data_ptr<scalar_t>(), n);
  });
  return {grad_x, grad_B, grad_w};
}

}  // namespace

// Registered as torch.ops.<extension name>.pair_messages(_backward). TORCH_LIBRARY pastes its
// namespace argument unexpanded, hence the extra macro that expands TORCH_EXTENSION_NAME first.
#define NNPOT_LIBRARY(name, m) TORCH_LIBRARY(name, m)
NNPOT_LIBRARY(TORCH_EXTENSION_NAME, m) {
  m.def("pair_messages", &pair_messages);  // Σ of NequIP's messages over both directions of pairs
  m.def("pair_messages_backward", &pair_messages_backward);  // its gradients: x, B, w
}
