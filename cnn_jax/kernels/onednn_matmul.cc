// A dense layer's matmuls through oneDNN as an XLA FFI custom call (CPU): C = op(A) @ op(B) of
// row-major 2-D arrays, op transposing where `transpose_a` / `transpose_b` is 1 (read through
// strides, nothing copied), in float32 or bfloat16 with a float32 or bfloat16 result (oneDNN
// accumulates in float32). The forward pass is x @ w, the backward passes dy @ w^T and x^T @ dy.
// Attribute `threads`: the OpenMP team of the call. Loaded by cnn_jax/kernels/dense.py.
#include <omp.h>

#include <cstdint>
#include <memory>
#include <sstream>
#include <string>

#include "oneapi/dnnl/dnnl.hpp"
#include "onednn_common.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;

namespace {

struct Problem {
  int64_t m, k, n;
  bool transpose_a, transpose_b;
  memory::data_type a_type, b_type, c_type;

  // Logical (M, K), (K, N), (M, N) over row-major storage: (K, M) and (N, K) when transposed.
  memory::desc A() const {
    return memory::desc({m, k}, a_type, transpose_a ? memory::dims{1, m} : memory::dims{k, 1});
  }
  memory::desc B() const {
    return memory::desc({k, n}, b_type, transpose_b ? memory::dims{1, k} : memory::dims{n, 1});
  }
  memory::desc C() const { return memory::desc({m, n}, c_type, memory::dims{n, 1}); }

  std::string Key(int64_t threads) const {
    std::ostringstream key;
    key << m << ',' << k << ',' << n << ':' << transpose_a << transpose_b << ':'
        << static_cast<int>(a_type) << ',' << static_cast<int>(b_type) << ','
        << static_cast<int>(c_type) << ':' << threads;
    return key.str();
  }
};

struct Entry {
  dnnl::matmul matmul;
  size_t scratch_bytes = 0;
};

std::unique_ptr<Entry> Build(const Problem& p) {
  dnnl::matmul::primitive_desc pd(cnn_jax_onednn::Engine(), p.A(), p.B(), p.C(),
                                  cnn_jax_onednn::UserScratchpad());
  auto entry = std::make_unique<Entry>();
  entry->matmul = dnnl::matmul(pd);
  entry->scratch_bytes = pd.scratchpad_desc().get_size();
  return entry;
}

ffi::Error Matmul(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> c,
                  int64_t transpose_a, int64_t transpose_b, int64_t threads) {
  const auto ad = a.dimensions(), bd = b.dimensions(), cd = c->dimensions();
  if (ad.size() != 2 || bd.size() != 2 || cd.size() != 2)
    return ffi::Error::InvalidArgument("onednn_matmul: expects 2-D arrays");
  Problem p{transpose_a ? ad[1] : ad[0], transpose_a ? ad[0] : ad[1],
            transpose_b ? bd[0] : bd[1], transpose_a != 0, transpose_b != 0};
  if ((transpose_b ? bd[1] : bd[0]) != p.k || cd[0] != p.m || cd[1] != p.n)
    return ffi::Error::InvalidArgument("onednn_matmul: shapes do not match");
  if (!cnn_jax_onednn::ToDnnl(a.element_type(), &p.a_type) ||
      !cnn_jax_onednn::ToDnnl(b.element_type(), &p.b_type) ||
      !cnn_jax_onednn::ToDnnl(c->element_type(), &p.c_type))
    return ffi::Error::InvalidArgument("onednn_matmul: only float32 and bfloat16 are supported");
  try {
    omp_set_num_threads(static_cast<int>(threads));  // this thread's team, before Build
    const Entry& e = cnn_jax_onednn::Cached<Entry>(p.Key(threads), [&] { return Build(p); });
    auto& engine = cnn_jax_onednn::Engine();
    dnnl::stream stream(engine);
    cnn_jax_onednn::Cores cores(static_cast<int>(threads));
    memory scratch({{static_cast<int64_t>(e.scratch_bytes)}, memory::data_type::u8,
                    memory::format_tag::a}, engine,
                   cnn_jax_onednn::Workspace(e.scratch_bytes + 1));
    memory a_m(p.A(), engine, a.untyped_data()), b_m(p.B(), engine, b.untyped_data()),
        c_m(p.C(), engine, c->untyped_data());
    e.matmul.execute(stream, {{DNNL_ARG_SRC, a_m}, {DNNL_ARG_WEIGHTS, b_m}, {DNNL_ARG_DST, c_m},
                              {DNNL_ARG_SCRATCHPAD, scratch}});
    stream.wait();
  } catch (const dnnl::error& error) {
    return ffi::Error::Internal(std::string("onednn_matmul: oneDNN failed: ") + error.what());
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnMatmul, Matmul,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("transpose_a")
                                  .Attr<int64_t>("transpose_b")
                                  .Attr<int64_t>("threads"));

// 1 if oneDNN has a matmul of this data type (0: float32, 1: bfloat16) for this CPU other than
// its reference loops (bfloat16 without the CPU's bfloat16 or AVX-512 instructions).
extern "C" int OnednnMatmulSupports(int bfloat16) {
  const auto type = bfloat16 ? memory::data_type::bf16 : memory::data_type::f32;
  const Problem p{64, 64, 64, false, false, type, type, type};
  try {
    dnnl::matmul::primitive_desc pd(cnn_jax_onednn::Engine(), p.A(), p.B(), p.C());
    return std::string(pd.impl_info_str()).rfind("ref", 0) == 0 ? 0 : 1;
  } catch (const dnnl::error&) {
    return 0;
  }
}
