// BatchNorm's four passes over an activation for CPU, as XLA FFI handlers (cnn_jax/kernels/
// normalization.py joins them; the per-channel arithmetic between them, and any sum across devices,
// stays in JAX). An activation is read as rows of C channels (NHWC or NC), float32 or bfloat16;
// sums are float32 over blocks of rows, added in double.
//
//   BnSums          x, shift          -> [sum(x - shift), sum((x - shift)^2)]       per channel
//   BnNormalize     x, r, mean, a, b  -> y = act((x - mean) * a + b + r)     (r: residual)
//   BnBackwardSums  g, y, x, mean     -> [sum(g'), sum(g' * (x - mean))]  g' = g where act passes
//   BnBackwardData  g, y, x, mean, A, B, D -> dx = g' * A + (x - mean) * B + D, dr = g'
//
// An empty r (and dr) means no residual.
//
// act: 0 none, 1 ReLU (passes where y > 0), 2 ReLU6 (where 0 < y < 6), PyTorch's rules.
// oneDNN's batch normalization is not used: its backward reduces over its own batch only, and
// under data parallelism the statistics and their gradients are sums over every device's share.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "onednn_common.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using Bf16 = uint16_t;

// Loads and stores are branch-free so that the compiler vectorises every loop below.
inline float Load(const float* p, int64_t i) { return p[i]; }
inline float Load(const Bf16* p, int64_t i) {
  uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline void Store(float* p, int64_t i, float v) { p[i] = v; }
inline void Store(Bf16* p, int64_t i, float v) {  // round to nearest even, NaN stays NaN (XLA's)
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  uint32_t quiet = (bits >> 16) | 0x40u;
  p[i] = static_cast<Bf16>((bits & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
}

template <int Act>
inline float Activate(float v) {
  if (Act == 1) return std::max(v, 0.0f);
  if (Act == 2) return std::min(std::max(v, 0.0f), 6.0f);
  return v;
}
template <int Act>
inline float Passed(float g, float y) {  // g where the activation passes gradient, else 0
  if (Act == 1) return y > 0.0f ? g : 0.0f;
  if (Act == 2) return (y > 0.0f) & (y < 6.0f) ? g : 0.0f;
  return g;
}

// Calls f.template operator()<Act>() for the runtime activation code.
template <typename F>
void WithActivation(int64_t act, F f) {
  if (act == 1) {
    f(std::integral_constant<int, 1>());
  } else if (act == 2) {
    f(std::integral_constant<int, 2>());
  } else {
    f(std::integral_constant<int, 0>());
  }
}

constexpr int64_t kBlock = 64;  // rows summed in float before adding into double

struct Shape {
  int64_t rows, channels;
};

Shape RowsOf(const ffi::AnyBuffer& x) {
  auto dims = x.dimensions();
  int64_t channels = dims.back();
  return {channels ? static_cast<int64_t>(x.element_count()) / channels : 0, channels};
}

// Calls body(first_row, last_row, thread) on `threads` OpenMP threads, rows split evenly.
template <typename Body>
void ForRows(int64_t rows, int threads, Body body) {
  cnn_jax_onednn::Cores cores(threads);
#pragma omp parallel num_threads(threads)
  {
    int t = omp_get_thread_num(), n = omp_get_num_threads();
    int64_t per = (rows + n - 1) / n;
    int64_t lo = std::min(rows, t * per), hi = std::min(rows, lo + per);
    body(lo, hi, t);
  }
}

// The row loops, compiled for AVX-512, AVX2 and baseline x86-64 and chosen at load time.
#define CNN_JAX_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

// Adds the per-channel sums of u and u * v over rows [lo, hi) into first and second: float over
// blocks of kBlock rows (in `block`, 2 * C floats), then double.
#define CNN_JAX_CHANNEL_SUMS(U, V)                                             \
  for (int64_t start = lo; start < hi; start += kBlock) {                     \
    std::fill(block, block + 2 * C, 0.0f);                                    \
    for (int64_t i = start * C; i < std::min(hi, start + kBlock) * C; i += C) { \
      for (int64_t c = 0; c < C; ++c) {                                       \
        float u = (U), v = (V);                                               \
        block[c] += u;                                                        \
        block[C + c] += u * v;                                                \
      }                                                                       \
    }                                                                         \
    for (int64_t c = 0; c < C; ++c) {                                         \
      first[c] += block[c];                                                   \
      first[C + c] += block[C + c];                                           \
    }                                                                         \
  }

template <typename T>
CNN_JAX_CLONES void SumsRows(const T* __restrict x, const float* __restrict shift, int64_t C,
                             int64_t lo, int64_t hi, float* __restrict block,
                             double* __restrict first) {
  CNN_JAX_CHANNEL_SUMS(Load(x, i + c) - shift[c], Load(x, i + c) - shift[c])
}

template <typename T, int Act, bool Add>
CNN_JAX_CLONES void NormalizeRows(const T* __restrict x, const T* __restrict r,
                                  const float* __restrict mean, const float* __restrict a,
                                  const float* __restrict b, int64_t C, int64_t lo, int64_t hi,
                                  T* __restrict y) {
  for (int64_t i = lo * C; i < hi * C; i += C) {
    for (int64_t c = 0; c < C; ++c) {
      float v = (Load(x, i + c) - mean[c]) * a[c] + b[c];
      Store(y, i + c, Activate<Act>(Add ? v + Load(r, i + c) : v));
    }
  }
}

template <typename T, int Act>
CNN_JAX_CLONES void BackwardSumsRows(const T* __restrict g, const T* __restrict y,
                                     const T* __restrict x, const float* __restrict mean,
                                     int64_t C, int64_t lo, int64_t hi, float* __restrict block,
                                     double* __restrict first) {
  CNN_JAX_CHANNEL_SUMS(Passed<Act>(Load(g, i + c), Load(y, i + c)), Load(x, i + c) - mean[c])
}

template <typename T, int Act, bool Add>
CNN_JAX_CLONES void BackwardDataRows(const T* __restrict g, const T* __restrict y,
                                     const T* __restrict x, const float* __restrict mean,
                                     const float* __restrict a, const float* __restrict b,
                                     const float* __restrict d, int64_t C, int64_t lo, int64_t hi,
                                     T* __restrict dx, T* __restrict dr) {
  for (int64_t i = lo * C; i < hi * C; i += C) {
    for (int64_t c = 0; c < C; ++c) {
      float passed = Passed<Act>(Load(g, i + c), Load(y, i + c));
      Store(dx, i + c, passed * a[c] + (Load(x, i + c) - mean[c]) * b[c] + d[c]);
      if (Add) Store(dr, i + c, passed);
    }
  }
}

// Per-channel [sum u, sum u * v] into out (2 * C floats); rows(lo, hi, block, first) adds a
// range's sums into first (2 * C doubles) on each thread.
template <typename Rows>
void ChannelSums(Shape s, int threads, Rows rows, float* out) {
  const int64_t C = s.channels;
  std::vector<double> totals(static_cast<size_t>(threads) * 2 * C, 0.0);
  ForRows(s.rows, threads, [&](int64_t lo, int64_t hi, int t) {
    std::vector<float> block(2 * C);
    rows(lo, hi, block.data(), totals.data() + static_cast<size_t>(t) * 2 * C);
  });
  for (int64_t c = 0; c < 2 * C; ++c) {
    double sum = 0.0;
    for (int t = 0; t < threads; ++t) sum += totals[static_cast<size_t>(t) * 2 * C + c];
    out[c] = static_cast<float>(sum);
  }
}

template <typename T>
const T* In(const ffi::AnyBuffer& buffer) {
  return static_cast<const T*>(buffer.untyped_data());
}
template <typename T>
T* Out(ffi::Result<ffi::AnyBuffer>& buffer) {
  return static_cast<T*>(buffer->untyped_data());
}

// Calls f(T()) for the element type of an activation: float or Bf16.
template <typename F>
ffi::Error WithType(ffi::DataType type, F f) {
  if (type == ffi::DataType::F32) {
    f(float());
  } else if (type == ffi::DataType::BF16) {
    f(Bf16());
  } else {
    return ffi::Error::InvalidArgument("batch_norm kernel: float32 or bfloat16 only");
  }
  return ffi::Error::Success();
}

ffi::Error SumsImpl(ffi::AnyBuffer x, ffi::AnyBuffer shift, ffi::Result<ffi::AnyBuffer> out,
                    int64_t threads) {
  Shape s = RowsOf(x);
  return WithType(x.element_type(), [&](auto type) {
    using T = decltype(type);
    ChannelSums(s, threads, [&](int64_t lo, int64_t hi, float* block, double* first) {
      SumsRows(In<T>(x), In<float>(shift), s.channels, lo, hi, block, first);
    }, Out<float>(out));
  });
}

// r: the residual added before the activation, or an empty array for none.
ffi::Error NormalizeImpl(ffi::AnyBuffer x, ffi::AnyBuffer r, ffi::AnyBuffer mean, ffi::AnyBuffer a,
                         ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> y, int64_t activation,
                         int64_t threads) {
  Shape s = RowsOf(x);
  bool add = r.element_count() > 0;
  return WithType(x.element_type(), [&](auto type) {
    using T = decltype(type);
    WithActivation(activation, [&](auto kind) {
      constexpr int Act = decltype(kind)::value;
      ForRows(s.rows, threads, [&](int64_t lo, int64_t hi, int) {
        auto rows = add ? NormalizeRows<T, Act, true> : NormalizeRows<T, Act, false>;
        rows(In<T>(x), In<T>(r), In<float>(mean), In<float>(a), In<float>(b), s.channels, lo, hi,
             Out<T>(y));
      });
    });
  });
}

ffi::Error BackwardSumsImpl(ffi::AnyBuffer g, ffi::AnyBuffer y, ffi::AnyBuffer x,
                            ffi::AnyBuffer mean, ffi::Result<ffi::AnyBuffer> out,
                            int64_t activation, int64_t threads) {
  Shape s = RowsOf(x);
  return WithType(x.element_type(), [&](auto type) {
    using T = decltype(type);
    WithActivation(activation, [&](auto kind) {
      ChannelSums(s, threads, [&](int64_t lo, int64_t hi, float* block, double* first) {
        BackwardSumsRows<T, decltype(kind)::value>(In<T>(g), In<T>(y), In<T>(x), In<float>(mean),
                                                   s.channels, lo, hi, block, first);
      }, Out<float>(out));
    });
  });
}

// dr: the residual's gradient (g where the activation passes), or an empty array for none.
ffi::Error BackwardDataImpl(ffi::AnyBuffer g, ffi::AnyBuffer y, ffi::AnyBuffer x,
                            ffi::AnyBuffer mean, ffi::AnyBuffer a, ffi::AnyBuffer b,
                            ffi::AnyBuffer d, ffi::Result<ffi::AnyBuffer> dx,
                            ffi::Result<ffi::AnyBuffer> dr, int64_t activation, int64_t threads) {
  Shape s = RowsOf(x);
  bool add = dr->element_count() > 0;
  return WithType(x.element_type(), [&](auto type) {
    using T = decltype(type);
    WithActivation(activation, [&](auto kind) {
      constexpr int Act = decltype(kind)::value;
      ForRows(s.rows, threads, [&](int64_t lo, int64_t hi, int) {
        auto rows = add ? BackwardDataRows<T, Act, true> : BackwardDataRows<T, Act, false>;
        rows(In<T>(g), In<T>(y), In<T>(x), In<float>(mean), In<float>(a), In<float>(b),
             In<float>(d), s.channels, lo, hi, Out<T>(dx), Out<T>(dr));
      });
    });
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    BnSums, SumsImpl,
    ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>()
        .Attr<int64_t>("threads"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    BnNormalize, NormalizeImpl,
    ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>()
        .Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>()
        .Attr<int64_t>("activation").Attr<int64_t>("threads"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    BnBackwardSums, BackwardSumsImpl,
    ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>()
        .Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>().Attr<int64_t>("activation")
        .Attr<int64_t>("threads"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    BnBackwardData, BackwardDataImpl,
    ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>()
        .Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>()
        .Ret<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>().Attr<int64_t>("activation")
        .Attr<int64_t>("threads"));
