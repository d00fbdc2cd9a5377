// 2-D average pooling (the window's sum over its size, padded cells counted as zeros: PyTorch's
// count_include_pad) and max pooling through oneDNN as XLA FFI custom calls (CPU). Max pooling:
// the forward pass, which also
// writes oneDNN's workspace (each output's argmax within its window), and the backward pass, which
// routes each output's gradient to that argmax. NHWC, float32 or bfloat16, any window and stride,
// asymmetric padding (padded cells never win).
//
// Both handlers take the attributes window, strides, padding_lo, padding_hi and threads (the
// OpenMP team that oneDNN runs the call on). Built by `make kernels` into the library of
// onednn_conv.cc; loaded by cnn_jax/kernels/pool.py.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include "oneapi/dnnl/dnnl.hpp"
#include "onednn_common.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using cnn_jax_onednn::Activation;
using cnn_jax_onednn::Cores;
using cnn_jax_onednn::Engine;
using cnn_jax_onednn::ToDnnl;
using cnn_jax_onednn::UserScratchpad;
using cnn_jax_onednn::Workspace;
using dnnl::memory;

namespace {

enum class Kind { kForward, kBackward };

// The NHWC input and output of one pooling, whichever of them is the result.
struct Geometry {
  ffi::Span<const int64_t> src, dst;
  memory::data_type type;
  memory::dims window, strides, pad_lo, pad_hi;
  dnnl::algorithm algo = dnnl::algorithm::pooling_max;
};

struct Entry {
  dnnl::primitive pool;
  memory::desc workspace;
  size_t scratch_bytes = 0;
};

std::unique_ptr<Entry> Build(Kind kind, const Geometry& g) {
  auto& engine = Engine();
  const auto attr = UserScratchpad();
  const auto src = Activation(g.src, g.type), dst = Activation(g.dst, g.type);
  const memory::dims dilation{0, 0};
  const auto algo = g.algo;
  dnnl::pooling_forward::primitive_desc fwd(engine, dnnl::prop_kind::forward_training, algo, src,
                                            dst, g.strides, g.window, dilation, g.pad_lo,
                                            g.pad_hi, attr);
  auto entry = std::make_unique<Entry>();
  entry->workspace = fwd.workspace_desc();
  if (kind == Kind::kForward) {
    entry->pool = dnnl::pooling_forward(fwd);
    entry->scratch_bytes = fwd.scratchpad_desc().get_size();
  } else {
    dnnl::pooling_backward::primitive_desc bwd(engine, algo, src, dst, g.strides, g.window,
                                               dilation, g.pad_lo, g.pad_hi, fwd, attr);
    entry->pool = dnnl::pooling_backward(bwd);
    entry->scratch_bytes = bwd.scratchpad_desc().get_size();
  }
  return entry;
}

std::string Key(Kind kind, const Geometry& g, int64_t threads) {
  std::ostringstream key;
  key << static_cast<int>(kind) << ':' << static_cast<int>(g.type) << ':' << threads << ':'
      << static_cast<int>(g.algo);
  for (auto span : {g.src, g.dst})
    for (int64_t d : span) key << ',' << d;
  for (const auto* dims : {&g.window, &g.strides, &g.pad_lo, &g.pad_hi})
    for (int64_t d : *dims) key << ';' << d;
  return key.str();
}

// Built primitives by shape and attributes (`cnn_jax_onednn::Cached`).
const Entry& Lookup(Kind kind, const Geometry& g, int64_t threads) {
  return cnn_jax_onednn::Cached<Entry>(Key(kind, g, threads), [&] { return Build(kind, g); });
}

// Where oneDNN's max differs from XLA's reduce_window max: oneDNN skips NaN (XLA's max propagates
// it) and starts from the lowest finite number (XLA from -inf, the value of a window of only
// -inf). Rare inputs; there the output is recomputed as XLA's (the workspace stays oneDNN's).
template <typename T>
float ToFloat(T value) {
  if constexpr (std::is_same_v<T, float>) {
    return value;
  } else {  // bfloat16: the high half of a float
    const uint32_t bits = static_cast<uint32_t>(value) << 16;
    float out;
    std::memcpy(&out, &bits, sizeof(out));
    return out;
  }
}

// The bits of `value` in T (float, or bfloat16 as uint16_t: the float's high half).
template <typename T>
T FromFloat(float value) {
  if constexpr (std::is_same_v<T, float>) {
    return value;
  } else {  // truncated: exact for -inf, the lowest finite float is bfloat16's
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof(bits));
    return static_cast<T>(bits >> 16);
  }
}

// Whether `src` holds a NaN or `dst` the lowest finite number, on the bits of float (uint32_t)
// or bfloat16 (uint16_t): integer maxima and compares, which vectorize.
template <typename Bits>
bool DiffersFromXla(const Bits* src, int64_t src_size, const Bits* dst, int64_t dst_size) {
  constexpr Bits abs_mask = static_cast<Bits>(~Bits(0)) >> 1;
  constexpr Bits inf = sizeof(Bits) == 4 ? 0x7f800000u : 0x7f80u;
  constexpr Bits lowest = static_cast<Bits>((inf - 1) | ~abs_mask);
  Bits largest = 0;
#pragma omp parallel for reduction(max : largest)
  for (int64_t i = 0; i < src_size; ++i) largest = std::max<Bits>(largest, src[i] & abs_mask);
  if (largest > inf) return true;  // a NaN
  int at_lowest = 0;
#pragma omp parallel for reduction(| : at_lowest)
  for (int64_t i = 0; i < dst_size; ++i) at_lowest |= dst[i] == lowest;
  return at_lowest;
}

// XLA's max (from -inf, NaN wins) of each window, as the input's element.
template <typename T>
void XlaMax(const T* src, T* dst, const Geometry& g) {
  const int64_t n = g.src[0], h = g.src[1], w = g.src[2], c = g.src[3];
  const int64_t oh = g.dst[1], ow = g.dst[2];
  const T minus_inf = FromFloat<T>(-std::numeric_limits<float>::infinity());
#pragma omp parallel for collapse(2)
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t y = 0; y < oh; ++y) {
      for (int64_t x = 0; x < ow; ++x) {
        for (int64_t k = 0; k < c; ++k) {
          T best = minus_inf;
          for (int64_t i = y * g.strides[0] - g.pad_lo[0], ki = 0; ki < g.window[0]; ++i, ++ki) {
            if (i < 0 || i >= h) continue;
            for (int64_t j = x * g.strides[1] - g.pad_lo[1], kj = 0; kj < g.window[1];
                 ++j, ++kj) {
              if (j < 0 || j >= w) continue;
              const T v = src[((b * h + i) * w + j) * c + k];
              const float best_f = ToFloat(best), v_f = ToFloat(v);
              if (!std::isnan(best_f) && (std::isnan(v_f) || v_f > best_f)) best = v;
            }
          }
          dst[((b * oh + y) * ow + x) * c + k] = best;
        }
      }
    }
  }
}

template <typename T, typename Bits>
void MatchXla(const ffi::AnyBuffer& src, const ffi::AnyBuffer& dst, const Geometry& g) {
  static_assert(sizeof(T) == sizeof(Bits));
  if (DiffersFromXla(static_cast<const Bits*>(src.untyped_data()),
                     static_cast<int64_t>(src.element_count()),
                     static_cast<const Bits*>(dst.untyped_data()),
                     static_cast<int64_t>(dst.element_count())))
    XlaMax(static_cast<const T*>(src.untyped_data()), static_cast<T*>(dst.untyped_data()), g);
}

// kForward: (src) -> (dst, workspace); kBackward: (diff_dst, workspace) -> diff_src. Average
// pooling (`workspace` null) has none.
ffi::Error Run(Kind kind, const ffi::AnyBuffer& src, const ffi::AnyBuffer& dst,
               const ffi::AnyBuffer* workspace, ffi::Span<const int64_t> window,
               ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding_lo,
               ffi::Span<const int64_t> padding_hi, int64_t threads) {
  Geometry g{src.dimensions(), dst.dimensions()};
  if (workspace == nullptr) g.algo = dnnl::algorithm::pooling_avg_include_padding;
  memory::data_type dst_type;
  if (!ToDnnl(src.element_type(), &g.type) || !ToDnnl(dst.element_type(), &dst_type) ||
      dst_type != g.type)
    return ffi::Error::InvalidArgument("onednn_pool: only float32 or bfloat16 in and out");
  if (g.src.size() != 4 || g.dst.size() != 4 || window.size() != 2 || strides.size() != 2 ||
      padding_lo.size() != 2 || padding_hi.size() != 2)
    return ffi::Error::InvalidArgument("onednn_pool: expects NHWC 2-D pooling");
  g.window = memory::dims(window.begin(), window.end());
  g.strides = memory::dims(strides.begin(), strides.end());
  g.pad_lo = memory::dims(padding_lo.begin(), padding_lo.end());
  g.pad_hi = memory::dims(padding_hi.begin(), padding_hi.end());
  try {
    omp_set_num_threads(static_cast<int>(threads));  // this thread's team, before Build
    const Entry& e = Lookup(kind, g, threads);
    const size_t workspace_bytes = workspace ? workspace->size_bytes() : 0;
    if (workspace_bytes != e.workspace.get_size())
      return ffi::Error::InvalidArgument("onednn_pool: workspace of " +
                                         std::to_string(workspace_bytes) +
                                         " bytes, oneDNN's takes " +
                                         std::to_string(e.workspace.get_size()));
    auto& engine = Engine();
    dnnl::stream stream(engine);
    Cores cores(static_cast<int>(threads));
    memory scratch({{static_cast<int64_t>(e.scratch_bytes)}, memory::data_type::u8,
                    memory::format_tag::a}, engine, Workspace(e.scratch_bytes + 4096));
    memory src_m(Activation(g.src, g.type), engine, src.untyped_data());
    memory dst_m(Activation(g.dst, g.type), engine, dst.untyped_data());
    std::unordered_map<int, memory> args{{DNNL_ARG_SCRATCHPAD, scratch}};
    if (workspace)
      args.emplace(DNNL_ARG_WORKSPACE, memory(e.workspace, engine, workspace->untyped_data()));
    if (kind == Kind::kForward) {
      args.emplace(DNNL_ARG_SRC, src_m);
      args.emplace(DNNL_ARG_DST, dst_m);
      e.pool.execute(stream, args);
      stream.wait();
      if (workspace) {  // max pooling: NaN and -inf as XLA's
        if (g.type == memory::data_type::f32)
          MatchXla<float, uint32_t>(src, dst, g);
        else
          MatchXla<uint16_t, uint16_t>(src, dst, g);
      }
    } else {
      args.emplace(DNNL_ARG_DIFF_DST, dst_m);
      args.emplace(DNNL_ARG_DIFF_SRC, src_m);
      e.pool.execute(stream, args);
    }
    stream.wait();
  } catch (const dnnl::error& error) {
    return ffi::Error::Internal(std::string("onednn_pool: oneDNN failed: ") + error.what());
  }
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::AnyBuffer src, ffi::Result<ffi::AnyBuffer> dst,
                   ffi::Result<ffi::AnyBuffer> workspace, ffi::Span<const int64_t> window,
                   ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding_lo,
                   ffi::Span<const int64_t> padding_hi, int64_t threads) {
  return Run(Kind::kForward, src, *dst, &*workspace, window, strides, padding_lo, padding_hi,
             threads);
}

ffi::Error Backward(ffi::AnyBuffer diff_dst, ffi::AnyBuffer workspace,
                    ffi::Result<ffi::AnyBuffer> diff_src, ffi::Span<const int64_t> window,
                    ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding_lo,
                    ffi::Span<const int64_t> padding_hi, int64_t threads) {
  return Run(Kind::kBackward, *diff_src, diff_dst, &workspace, window, strides, padding_lo,
             padding_hi, threads);
}

ffi::Error AvgForward(ffi::AnyBuffer src, ffi::Result<ffi::AnyBuffer> dst,
                      ffi::Span<const int64_t> window, ffi::Span<const int64_t> strides,
                      ffi::Span<const int64_t> padding_lo, ffi::Span<const int64_t> padding_hi,
                      int64_t threads) {
  return Run(Kind::kForward, src, *dst, nullptr, window, strides, padding_lo, padding_hi,
             threads);
}

ffi::Error AvgBackward(ffi::AnyBuffer diff_dst, ffi::Result<ffi::AnyBuffer> diff_src,
                       ffi::Span<const int64_t> window, ffi::Span<const int64_t> strides,
                       ffi::Span<const int64_t> padding_lo, ffi::Span<const int64_t> padding_hi,
                       int64_t threads) {
  return Run(Kind::kBackward, *diff_src, diff_dst, nullptr, window, strides, padding_lo,
             padding_hi, threads);
}

template <typename Binding>
auto Attributes(Binding binding) {
  return std::move(binding)
      .template Attr<ffi::Span<const int64_t>>("window")
      .template Attr<ffi::Span<const int64_t>>("strides")
      .template Attr<ffi::Span<const int64_t>>("padding_lo")
      .template Attr<ffi::Span<const int64_t>>("padding_hi")
      .template Attr<int64_t>("threads");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    OnednnMaxPoolForward, Forward,
    Attributes(ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    OnednnMaxPoolBackward, Backward,
    Attributes(ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    OnednnAvgPoolForward, AvgForward,
    Attributes(ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    OnednnAvgPoolBackward, AvgBackward,
    Attributes(ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>()));

// Whether oneDNN has average pooling (fwd and bwd) of float32 (0) or bfloat16 (1) on this CPU.
extern "C" int OnednnAvgPoolSupports(int bfloat16) {
  const auto type = bfloat16 ? memory::data_type::bf16 : memory::data_type::f32;
  const memory::dims src{1, 3, 3, 8}, dst{1, 3, 3, 8};  // NHWC
  Geometry g{ffi::Span<const int64_t>(src.data(), 4), ffi::Span<const int64_t>(dst.data(), 4),
             type, {3, 3}, {1, 1}, {1, 1}, {1, 1}, dnnl::algorithm::pooling_avg_include_padding};
  try {
    Build(Kind::kForward, g);
    Build(Kind::kBackward, g);
    return 1;
  } catch (const dnnl::error&) {
    return 0;
  }
}

// oneDNN's workspace bytes per output element of a max pooling over `window_size` cells (0 where
// it builds none for this data type, 0: float32, 1: bfloat16, on this CPU).
extern "C" int64_t OnednnMaxPoolWorkspaceBytes(int bfloat16, int64_t window_size) {
  const auto type = bfloat16 ? memory::data_type::bf16 : memory::data_type::f32;
  const memory::dims src{1, 1, window_size, 8}, dst{1, 1, 1, 8};  // NHWC
  Geometry g{ffi::Span<const int64_t>(src.data(), 4), ffi::Span<const int64_t>(dst.data(), 4),
             type, {1, window_size}, {1, 1}, {0, 0}, {0, 0}};
  try {
    const auto bytes = Build(Kind::kForward, g)->workspace.get_size();
    Build(Kind::kBackward, g);
    return static_cast<int64_t>(bytes / 8);
  } catch (const dnnl::error&) {
    return 0;
  }
}
