// One-token cached attention for XLA:CPU, called from janus_jax/model/cpu_decode_attention.py.
//
// q [B, K, G, D] (query heads grouped under their KV head), keys and values [B, K, S, D] (the KV cache,
// head-major), mask [B, S] (which cache slots a row may read) -> out [B, K, G, D]. Float32 throughout.
//
// Same arithmetic as janus_jax.model.attention.xla_cached_attention: scores q.k / sqrt(D), a softmax over the
// readable slots, probabilities times values. Masked slots are skipped rather than scored: in the XLA path
// their exp(-0.7 * FLT_MAX - max) is exactly 0, so skipping them changes nothing, and a row that may read
// no slot gets zeros there as here. Each (row, KV head) pair is one task; the caller and XLA's intra-op
// thread pool take tasks until none are left, so results never depend on the number of threads.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// Aliases keep the commas of template arguments out of the binding macro below.
using F32x4 = ffi::Buffer<ffi::F32, 4>;
using Mask = ffi::Buffer<ffi::PRED, 2>;

namespace {

void AttendOnePair(const float* q, const float* k, const float* v, const bool* mask, int64_t groups,
                   int64_t slots, int64_t dim, float scale, float* out, std::vector<float>& scores,
                   std::vector<int64_t>& readable) {
  readable.clear();
  for (int64_t s = 0; s < slots; ++s) {
    if (mask[s]) readable.push_back(s);
  }
  const int64_t n = static_cast<int64_t>(readable.size());
  std::fill(out, out + groups * dim, 0.0f);
  if (n == 0) return;

  // Each key is read once for all the query heads of its group.
  scores.resize(groups * n);
  for (int64_t i = 0; i < n; ++i) {
    const float* key = k + readable[i] * dim;
    for (int64_t g = 0; g < groups; ++g) {
      const float* query = q + g * dim;
      float dot = 0.0f;
      for (int64_t d = 0; d < dim; ++d) dot += query[d] * key[d];
      scores[g * n + i] = dot * scale;
    }
  }
  for (int64_t g = 0; g < groups; ++g) {
    float* row = scores.data() + g * n;
    const float row_max = *std::max_element(row, row + n);
    float total = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
      row[i] = std::exp(row[i] - row_max);
      total += row[i];
    }
    const float inverse = 1.0f / total;
    for (int64_t i = 0; i < n; ++i) row[i] *= inverse;
  }
  // Each value is read once for all the query heads of its group.
  for (int64_t i = 0; i < n; ++i) {
    const float* value = v + readable[i] * dim;
    for (int64_t g = 0; g < groups; ++g) {
      const float p = scores[g * n + i];
      float* o = out + g * dim;
      for (int64_t d = 0; d < dim; ++d) o[d] += p * value[d];
    }
  }
}

// Shared by the caller and the pool's helpers; a helper that starts after the work is done finds no task
// and returns, so the state lives as long as the last of them holds it.
struct Tasks {
  const float *q, *k, *v;
  const bool* mask;
  float* out;
  int64_t kv_heads, groups, slots, dim, pairs;
  float scale;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};

  void Work() {
    std::vector<float> scores;
    std::vector<int64_t> readable;
    for (int64_t pair = next.fetch_add(1); pair < pairs; pair = next.fetch_add(1)) {
      AttendOnePair(q + pair * groups * dim, k + pair * slots * dim, v + pair * slots * dim,
                    mask + (pair / kv_heads) * slots, groups, slots, dim, scale, out + pair * groups * dim,
                    scores, readable);
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

ffi::Error DecodeAttentionImpl(ffi::ThreadPool pool, F32x4 q, F32x4 k, F32x4 v, Mask mask,
                               ffi::Result<F32x4> out) {
  const auto qd = q.dimensions();
  const auto kd = k.dimensions();
  const auto vd = v.dimensions();
  const auto md = mask.dimensions();
  const bool same_cache = vd[0] == kd[0] && vd[1] == kd[1] && vd[2] == kd[2] && vd[3] == kd[3];
  if (!same_cache || kd[0] != qd[0] || kd[1] != qd[1] || kd[3] != qd[3] || md[0] != qd[0] || md[1] != kd[2]) {
    return ffi::Error::InvalidArgument("decode attention: q [B,K,G,D], k/v [B,K,S,D], mask [B,S] disagree");
  }
  auto tasks = std::make_shared<Tasks>();
  tasks->q = q.typed_data();
  tasks->k = k.typed_data();
  tasks->v = v.typed_data();
  tasks->mask = mask.typed_data();
  tasks->out = out->typed_data();
  tasks->kv_heads = qd[1];
  tasks->groups = qd[2];
  tasks->dim = qd[3];
  tasks->slots = kd[2];
  tasks->pairs = qd[0] * qd[1];
  tasks->scale = 1.0f / std::sqrt(static_cast<float>(qd[3]));

  const int64_t helpers = std::min<int64_t>(pool.num_threads(), tasks->pairs) - 1;
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule([tasks] { tasks->Work(); });
  tasks->Work();
  // Only tasks already taken by a helper can still be running; wait for those.
  while (tasks->done.load(std::memory_order_acquire) < tasks->pairs) std::this_thread::yield();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JanusDecodeAttention, DecodeAttentionImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32x4>()
                                  .Arg<F32x4>()
                                  .Arg<F32x4>()
                                  .Arg<Mask>()
                                  .Ret<F32x4>());
