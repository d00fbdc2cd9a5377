// 2-D convolutions through oneDNN as XLA FFI custom calls (CPU): forward, backward-data and
// backward-weights of an NHWC x HWIO -> NHWC convolution with any stride, asymmetric padding,
// kernel dilation and feature groups, in float32 or bfloat16 (oneDNN accumulates in float32).
//
// Every handler takes the same attributes: strides, padding_lo, padding_hi, dilation (XLA's
// kernel dilation, >= 1), groups (XLA's feature_group_count) and threads (the OpenMP team that
// oneDNN runs the call on). Built by `make kernels`; loaded by cnn_jax/kernels/conv.py.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>

#include "oneapi/dnnl/dnnl.hpp"
#include "onednn_common.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using cnn_jax_onednn::Activation;
using cnn_jax_onednn::Cores;
using cnn_jax_onednn::Engine;
using cnn_jax_onednn::ToDnnl;
using cnn_jax_onednn::UserScratchpad;
using cnn_jax_onednn::Workspace;

namespace {

enum class Kind { kForward, kBackwardData, kBackwardWeights };

// The shapes and attributes of one call; `src`, `wei`, `dst` are the NHWC input, HWIO kernel
// and NHWC output whichever of them is the result.
struct Geometry {
  ffi::Span<const int64_t> src, wei, dst;
  memory::data_type src_type, wei_type, dst_type;
  memory::dims strides, dilates, pad_lo, pad_hi;
  int64_t groups;
};

// oneDNN's logical dims of the HWIO kernel ({O, I, KH, KW}, or {G, O/G, I, KH, KW} with groups),
// either laid out as XLA keeps it (`plain`) or left for the primitive to choose.
memory::desc Weights(const Geometry& g, bool plain) {
  const int64_t kh = g.wei[0], kw = g.wei[1], i = g.wei[2], o = g.wei[3];
  if (g.groups == 1) {
    if (!plain) return memory::desc({o, i, kh, kw}, g.wei_type, memory::format_tag::any);
    return memory::desc({o, i, kh, kw}, g.wei_type, memory::dims{1, o, kw * i * o, i * o});
  }
  const memory::dims dims{g.groups, o / g.groups, i, kh, kw};
  if (!plain) return memory::desc(dims, g.wei_type, memory::format_tag::any);
  return memory::desc(dims, g.wei_type, memory::dims{o / g.groups, 1, o, kw * i * o, i * o});
}

// A built primitive plus the reorder between XLA's HWIO kernel and the layout it chose.
struct Entry {
  dnnl::primitive conv;
  memory::desc wei;       // the primitive's (diff_)weights layout
  memory::desc user_wei;  // HWIO
  bool reorder = false;
  dnnl::primitive wei_reorder;
  size_t scratch_bytes = 0;
};

std::unique_ptr<Entry> Build(Kind kind, const Geometry& g) {
  auto& engine = Engine();
  const auto attr = UserScratchpad();
  const auto src = Activation(g.src, g.src_type), dst = Activation(g.dst, g.dst_type);
  const auto any_wei = Weights(g, /*plain=*/false);
  const auto algo = dnnl::algorithm::convolution_direct;
  dnnl::convolution_forward::primitive_desc fwd(
      engine, dnnl::prop_kind::forward_training, algo, src, any_wei, dst, g.strides, g.dilates,
      g.pad_lo, g.pad_hi, attr);
  auto entry = std::make_unique<Entry>();
  entry->user_wei = Weights(g, /*plain=*/true);
  size_t scratch = 0;
  if (kind == Kind::kForward) {
    entry->conv = dnnl::convolution_forward(fwd);
    entry->wei = fwd.weights_desc();
    scratch = fwd.scratchpad_desc().get_size();
  } else if (kind == Kind::kBackwardData) {
    dnnl::convolution_backward_data::primitive_desc bwd(
        engine, algo, src, any_wei, dst, g.strides, g.dilates, g.pad_lo, g.pad_hi, fwd, attr);
    entry->conv = dnnl::convolution_backward_data(bwd);
    entry->wei = bwd.weights_desc();
    scratch = bwd.scratchpad_desc().get_size();
  } else {
    dnnl::convolution_backward_weights::primitive_desc bwd(
        engine, algo, src, any_wei, dst, g.strides, g.dilates, g.pad_lo, g.pad_hi, fwd, attr);
    entry->conv = dnnl::convolution_backward_weights(bwd);
    entry->wei = bwd.diff_weights_desc();
    scratch = bwd.scratchpad_desc().get_size();
  }
  entry->reorder = entry->wei != entry->user_wei;
  if (entry->reorder) {
    const bool to_user = kind == Kind::kBackwardWeights;
    dnnl::reorder::primitive_desc pd(engine, to_user ? entry->wei : entry->user_wei, engine,
                                     to_user ? entry->user_wei : entry->wei, attr);
    entry->wei_reorder = dnnl::reorder(pd);
    scratch = std::max(scratch, pd.scratchpad_desc().get_size());
  }
  entry->scratch_bytes = scratch;
  return entry;
}

std::string Key(Kind kind, const Geometry& g, int64_t threads) {
  std::ostringstream key;
  key << static_cast<int>(kind) << ':' << static_cast<int>(g.src_type) << ','
      << static_cast<int>(g.wei_type) << ',' << static_cast<int>(g.dst_type) << ':' << g.groups
      << ':' << threads;
  for (auto span : {g.src, g.wei, g.dst})
    for (int64_t d : span) key << ',' << d;
  for (const auto* dims : {&g.strides, &g.dilates, &g.pad_lo, &g.pad_hi})
    for (int64_t d : *dims) key << ';' << d;
  return key.str();
}

// Built primitives by shape and attributes (`cnn_jax_onednn::Cached`).
const Entry& Lookup(Kind kind, const Geometry& g, int64_t threads) {
  return cnn_jax_onednn::Cached<Entry>(Key(kind, g, threads), [&] { return Build(kind, g); });
}

ffi::Error Run(Kind kind, ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::AnyBuffer out,
               ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding_lo,
               ffi::Span<const int64_t> padding_hi, ffi::Span<const int64_t> dilation,
               int64_t groups, int64_t threads) {
  // a, b -> out: (src, wei) -> dst, (dst, wei) -> src, (src, dst) -> wei.
  const ffi::AnyBuffer& src = kind == Kind::kBackwardData ? out : a;
  const ffi::AnyBuffer& wei = kind == Kind::kBackwardWeights ? out : b;
  const ffi::AnyBuffer& dst =
      kind == Kind::kForward ? out : (kind == Kind::kBackwardData ? a : b);
  Geometry g{src.dimensions(), wei.dimensions(), dst.dimensions()};
  if (!ToDnnl(src.element_type(), &g.src_type) || !ToDnnl(wei.element_type(), &g.wei_type) ||
      !ToDnnl(dst.element_type(), &g.dst_type))
    return ffi::Error::InvalidArgument("onednn_conv: only float32 and bfloat16 are supported");
  if (g.src.size() != 4 || g.wei.size() != 4 || g.dst.size() != 4 || strides.size() != 2 ||
      padding_lo.size() != 2 || padding_hi.size() != 2 || dilation.size() != 2 || groups < 1)
    return ffi::Error::InvalidArgument("onednn_conv: expects NHWC/HWIO 2-D convolutions");
  g.groups = groups;
  g.strides = memory::dims(strides.begin(), strides.end());
  g.pad_lo = memory::dims(padding_lo.begin(), padding_lo.end());
  g.pad_hi = memory::dims(padding_hi.begin(), padding_hi.end());
  g.dilates = {dilation[0] - 1, dilation[1] - 1};  // oneDNN counts the gaps
  try {
    omp_set_num_threads(static_cast<int>(threads));  // this thread's team, before Build
    const Entry& e = Lookup(kind, g, threads);
    auto& engine = Engine();
    dnnl::stream stream(engine);
    Cores cores(static_cast<int>(threads));
    char* work = static_cast<char*>(
        Workspace((e.reorder ? e.wei.get_size() : 0) + e.scratch_bytes + 4096));
    const size_t wei_bytes = e.reorder ? (e.wei.get_size() + 4095) / 4096 * 4096 : 0;
    memory scratch({{static_cast<int64_t>(e.scratch_bytes)}, memory::data_type::u8,
                    memory::format_tag::a}, engine, work + wei_bytes);
    memory user_wei(e.user_wei, engine, wei.untyped_data());
    memory conv_wei = e.reorder ? memory(e.wei, engine, work) : user_wei;
    memory src_m(Activation(g.src, g.src_type), engine, src.untyped_data());
    memory dst_m(Activation(g.dst, g.dst_type), engine, dst.untyped_data());
    if (e.reorder && kind != Kind::kBackwardWeights)
      e.wei_reorder.execute(stream, {{DNNL_ARG_FROM, user_wei}, {DNNL_ARG_TO, conv_wei},
                                     {DNNL_ARG_SCRATCHPAD, scratch}});
    if (kind == Kind::kForward) {
      e.conv.execute(stream, {{DNNL_ARG_SRC, src_m}, {DNNL_ARG_WEIGHTS, conv_wei},
                              {DNNL_ARG_DST, dst_m}, {DNNL_ARG_SCRATCHPAD, scratch}});
    } else if (kind == Kind::kBackwardData) {
      e.conv.execute(stream, {{DNNL_ARG_DIFF_DST, dst_m}, {DNNL_ARG_WEIGHTS, conv_wei},
                              {DNNL_ARG_DIFF_SRC, src_m}, {DNNL_ARG_SCRATCHPAD, scratch}});
    } else {
      e.conv.execute(stream, {{DNNL_ARG_SRC, src_m}, {DNNL_ARG_DIFF_DST, dst_m},
                              {DNNL_ARG_DIFF_WEIGHTS, conv_wei}, {DNNL_ARG_SCRATCHPAD, scratch}});
      if (e.reorder)
        e.wei_reorder.execute(stream, {{DNNL_ARG_FROM, conv_wei}, {DNNL_ARG_TO, user_wei},
                                       {DNNL_ARG_SCRATCHPAD, scratch}});
    }
    stream.wait();
  } catch (const dnnl::error& error) {
    return ffi::Error::Internal(std::string("onednn_conv: oneDNN failed: ") + error.what());
  }
  return ffi::Error::Success();
}

template <Kind kind>
ffi::Error Handler(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> out,
                   ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding_lo,
                   ffi::Span<const int64_t> padding_hi, ffi::Span<const int64_t> dilation,
                   int64_t groups, int64_t threads) {
  return Run(kind, a, b, *out, strides, padding_lo, padding_hi, dilation, groups, threads);
}

auto Binding() {
  return ffi::Ffi::Bind()
      .Arg<ffi::AnyBuffer>()
      .Arg<ffi::AnyBuffer>()
      .Ret<ffi::AnyBuffer>()
      .Attr<ffi::Span<const int64_t>>("strides")
      .Attr<ffi::Span<const int64_t>>("padding_lo")
      .Attr<ffi::Span<const int64_t>>("padding_hi")
      .Attr<ffi::Span<const int64_t>>("dilation")
      .Attr<int64_t>("groups")
      .Attr<int64_t>("threads");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvForward, Handler<Kind::kForward>, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvBackwardData, Handler<Kind::kBackwardData>, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvBackwardWeights, Handler<Kind::kBackwardWeights>,
                              Binding());

// 1 if oneDNN builds a convolution of this data type (0: float32, 1: bfloat16) on this CPU.
extern "C" int OnednnConvSupports(int bfloat16) {
  const auto type = bfloat16 ? memory::data_type::bf16 : memory::data_type::f32;
  const memory::dims nhwc{1, 4, 4, 8}, hwio{3, 3, 8, 8};
  Geometry g{ffi::Span<const int64_t>(nhwc.data(), 4), ffi::Span<const int64_t>(hwio.data(), 4),
             ffi::Span<const int64_t>(nhwc.data(), 4), type, type, type,
             {1, 1}, {0, 0}, {1, 1}, {1, 1}, 1};
  try {
    for (Kind kind : {Kind::kForward, Kind::kBackwardData, Kind::kBackwardWeights})
      Build(kind, g);
  } catch (const dnnl::error&) {
    return 0;
  }
  return 1;
}
