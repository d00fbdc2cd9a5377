// What the oneDNN FFI handlers of cnn_jax/kernels share (onednn_conv.cc, onednn_pool.cc): the
// engine, the data types, the process's core budget and the per-thread working memory. These are
// inline functions with external linkage, so both handler files compiled into one library share
// one engine and one core budget.
#ifndef CNN_JAX_KERNELS_ONEDNN_COMMON_H_
#define CNN_JAX_KERNELS_ONEDNN_COMMON_H_

#include <sched.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace cnn_jax_onednn {

inline dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

inline bool ToDnnl(xla::ffi::DataType type, dnnl::memory::data_type* out) {
  switch (type) {
    case xla::ffi::DataType::F32: *out = dnnl::memory::data_type::f32; return true;
    case xla::ffi::DataType::BF16: *out = dnnl::memory::data_type::bf16; return true;
    default: return false;
  }
}

inline dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// oneDNN's logical dims and XLA's strides of an NHWC activation.
inline dnnl::memory::desc Activation(xla::ffi::Span<const int64_t> nhwc,
                                     dnnl::memory::data_type type) {
  return dnnl::memory::desc({nhwc[0], nhwc[3], nhwc[1], nhwc[2]}, type,
                            dnnl::memory::format_tag::nhwc);
}

// The cores every oneDNN call of the process shares: XLA runs independent custom calls (of one
// device, or of several forced host devices) at once, and together they never run more OpenMP
// threads than the process has cores; a call waits until its `threads` are free.
class Cores {
 public:
  explicit Cores(int want) : held_(std::min(want, Total())) {
    std::unique_lock<std::mutex> lock(Mutex());
    Freed().wait(lock, [this] { return Free() >= held_; });
    Free() -= held_;
  }
  ~Cores() {
    {
      std::lock_guard<std::mutex> lock(Mutex());
      Free() += held_;
    }
    Freed().notify_all();
  }
  Cores(const Cores&) = delete;
  Cores& operator=(const Cores&) = delete;

 private:
  static int Total() {
    static const int total = [] {
      cpu_set_t set;
      return sched_getaffinity(0, sizeof(set), &set) == 0 ? std::max(1, CPU_COUNT(&set)) : 1;
    }();
    return total;
  }
  static int& Free() { static int free = Total(); return free; }
  static std::mutex& Mutex() { static std::mutex mutex; return mutex; }
  static std::condition_variable& Freed() { static std::condition_variable cv; return cv; }
  const int held_;
};

// Per-thread working memory (reordered kernel, scratchpad), grown on demand.
inline void* Workspace(size_t bytes) {
  struct Free { void operator()(void* p) const { std::free(p); } };
  thread_local std::unique_ptr<void, Free> buffer;
  thread_local size_t size = 0;
  if (bytes > size) {
    size = (bytes + 4095) / 4096 * 4096;
    buffer.reset(std::aligned_alloc(4096, size));
  }
  return buffer.get();
}

// The entry built for `key` (a primitive and what it needs), built once by `build()`. Entries are
// immutable, so calls on many threads (one per forced host device) share them; one cache per
// Entry type.
template <typename Entry, typename BuildFn>
const Entry& Cached(const std::string& key, BuildFn build) {
  static std::mutex mutex;
  static std::unordered_map<std::string, std::unique_ptr<Entry>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto& entry = cache[key];
  if (!entry) entry = build();
  return *entry;
}

}  // namespace cnn_jax_onednn

#endif  // CNN_JAX_KERNELS_ONEDNN_COMMON_H_
