// What rnnscan's CPU kernels share: the variant (vector width and register
// tile per instruction set), vector math, register-tiled products, the row
// blocks threads own, and the layout of per-step arrays, lengths and resets.
// Each kernel source includes it once; everything is internal to that source.

#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

// One build per instruction set (rnnscan/kernels/build.py): RNNSCAN_ISA names
// it and suffixes every FFI target, so several variants can be registered in
// one process. The vector width and the register tile are the variant's.
#ifndef RNNSCAN_ISA
#error "build with -DRNNSCAN_ISA=avx512|avx2|baseline"
#endif
#define RNNSCAN_CAT_(a, b) a##_##b
#define RNNSCAN_CAT(a, b) RNNSCAN_CAT_(a, b)
#define RNNSCAN_TARGET(name) RNNSCAN_CAT(name, RNNSCAN_ISA)

namespace ffi = xla::ffi;

namespace {

#if defined(__AVX512F__)
// 32 registers of 16 floats: 6 rows x 4 vectors = 24 accumulators, 6
// broadcasts and 1 vector of the panel at a time.
constexpr int kLanes = 16, kTileRows = 6;
#elif defined(__AVX2__) && defined(__FMA__)
// 16 registers of 8 floats: 3 rows x 4 vectors = 12 accumulators, 3 broadcasts
// and 1 vector of the panel at a time (fused multiply-adds need no temporary).
constexpr int kLanes = 8, kTileRows = 3;
#else
// 16 registers of 4 floats (SSE2, or any target's 16-byte vectors); without
// FMA each multiply-add needs a temporary: 2 rows x 4 = 8 accumulators.
constexpr int kLanes = 4, kTileRows = 2;
#endif

typedef float vf __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(kLanes * sizeof(int32_t))));

inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
// A broadcast (`vf{} + x` would add -0.0 first; a loop over lanes inserts each).
template <size_t... I>
inline vf splat_(float x, std::index_sequence<I...>) {
  return vf{((void)I, x)...};
}
inline vf splat(float x) { return splat_(x, std::make_index_sequence<kLanes>{}); }

// exp(x), Cephes' polynomial on [-ln2/2, ln2/2]; relative error ~2e-7. The
// clamps let NaN through (a comparison with NaN is false).
inline vf exp_(vf x) {
  x = x > 88.0f ? splat(88.0f) : x;
  x = x < -87.0f ? splat(-87.0f) : x;
  // Round to the nearest integer with the 1.5 * 2^23 shift (no -ffast-math here).
  const vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  vf r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  vf p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
  vf scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// 1 / x for x >= 1: the hardware's estimate (14 bits on AVX-512, 12 below)
// and one Newton step; a division takes several times as long.
inline vf reciprocal(vf x) {
#if defined(__AVX512F__)
  const vf r = reinterpret_cast<vf>(_mm512_rcp14_ps(reinterpret_cast<__m512>(x)));
#elif defined(__AVX2__)
  const vf r = reinterpret_cast<vf>(_mm256_rcp_ps(reinterpret_cast<__m256>(x)));
#elif defined(__SSE__)
  const vf r = reinterpret_cast<vf>(_mm_rcp_ps(reinterpret_cast<__m128>(x)));
#else
  return 1.0f / x;
#endif
#if defined(__SSE__)
  return r * (2.0f - x * r);
#endif
}

inline vf sigmoid(vf x) { return reciprocal(1.0f + exp_(-x)); }

inline vf tanh_(vf x) {
  const vf e = exp_(-2.0f * (x < 0.0f ? -x : x));
  const vf t = (1.0f - e) * reciprocal(1.0f + e);
  return x < 0.0f ? -t : t;
}

// Rows [begin, end) in tiles: as few as hold kTileRows rows each, as even as can be.
struct Tiles {
  int64_t begin, rows, count;
  Tiles(int64_t begin, int64_t end)
      : begin(begin), rows(end - begin), count((rows + kTileRows - 1) / kTileRows) {}
  int64_t start(int64_t tile) const { return begin + rows * tile / count; }
};

struct Sequence {
  int64_t T, B, H;
  bool reverse;
  bool batch_major;  // the per-step arrays are (B, T, width), else (T, B, width)
  int64_t first() const { return reverse ? T - 1 : 0; }
  // Offset of row r of step t in a per-step array.
  int64_t at(int64_t t, int64_t r, int64_t width) const {
    return (batch_major ? r * T + t : t * B + r) * width;
  }
  // Distance from one row of a step to the next.
  int64_t row_stride(int64_t width) const { return batch_major ? T * width : width; }
};

// The padding and resets of a sequence (row r of step t is read when
// t < lengths[r]; where resets is true the state is set to (h_r, c_r) first;
// c_r: the LSTM's cell, null for a GRU).
struct Masks {
  const int32_t* lengths;  // (B,), each in [0, T]
  const bool* resets;      // per step, (T, B) or (B, T)
  const float *h_r, *c_r;  // (B, H)
  int64_t length(int64_t r, int64_t T) const { return std::clamp<int64_t>(lengths[r], 0, T); }
  // The longest length of rows [begin, end): steps at or past it only carry states.
  int64_t longest(int64_t begin, int64_t end, int64_t T) const {
    int64_t most = 0;
    for (int64_t r = begin; r < end; ++r) most = std::max(most, length(r, T));
    return most;
  }
};

// out[r, :V vectors] (+)= a[r, :K] @ m[:K, :V vectors] for rows [0, R): the
// accumulators stay in registers (kept out of line so that no other values
// compete for them). Per k, the R broadcasts are made first and the panel's
// row is read one vector at a time, so the live registers are R*V + R + 1.
template <int R, int V, bool kAccumulate = false>
__attribute__((noinline)) void product_tile(const float* a, int64_t lda, const float* m,
                                            int64_t ldm, int64_t K, float* out, int64_t ldo) {
  vf acc[R][V] = {};
  if (kAccumulate)
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < V; ++v) acc[r][v] = load(out + r * ldo + v * kLanes);
  for (int64_t k = 0; k < K; ++k) {
    const float* mk = m + k * ldm;
    vf ak[R];
    for (int r = 0; r < R; ++r) ak[r] = splat(a[r * lda + k]);
    for (int v = 0; v < V; ++v) {
      const vf w = load(mk + v * kLanes);
      for (int r = 0; r < R; ++r) acc[r][v] += ak[r] * w;
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) store(out + r * ldo + v * kLanes, acc[r][v]);
}

// Calls f(std::integral_constant<int, n>{}) for a tile of n = 1..kTileRows rows.
template <int N = kTileRows, typename F>
void with_tile_rows(int64_t n, F f) {
  if constexpr (N == 1) {
    f(std::integral_constant<int, 1>{});
  } else if (n >= N) {
    f(std::integral_constant<int, N>{});
  } else {
    with_tile_rows<N - 1>(n, f);
  }
}

// Floats of x @ w_ih a thread keeps for the steps ahead: 1 MiB, half a core's
// L2 (at `medium`, 512 units, 8 steps ahead ran 3% faster than 2).
constexpr int64_t kProjectedFloats = int64_t{1} << 18;

// x @ w_ih for a chunk of `steps` steps (step k at time(k); steps at or past
// `longest` skipped), rows `tiles`, units [u0, u1), into out(k, r0) (rows
// kGates * (u1 - u0) apart; unit u's kGates * kLanes columns at kGates * (u -
// u0)). It runs ahead of the recurrence panel by panel of w_ih, so that w_ih
// and w_hh take turns in cache per chunk rather than per step.
template <int kGates, typename Time, typename Out>
void project_inputs(const float* x, const Sequence& s, int64_t I, const float* w_ih,
                    const Tiles& tiles, int64_t u0, int64_t u1, int64_t steps, int64_t longest,
                    Time time, Out out) {
  for (int64_t u = u0; u < u1; u += kLanes)
    for (int64_t k = 0; k < steps; ++k) {
      if (time(k) >= longest) continue;
      for (int64_t tile = 0; tile < tiles.count; ++tile) {
        const int64_t r0 = tiles.start(tile);
        with_tile_rows(tiles.start(tile + 1) - r0, [&](auto R) {
          product_tile<R(), kGates>(x + s.at(time(k), r0, I), s.row_stride(I),
                                    w_ih + u * kGates * I, kGates * kLanes, I,
                                    out(k, r0) + kGates * (u - u0), kGates * (u1 - u0));
        });
      }
    }
}

// Runs body(begin, end) over `blocks` contiguous blocks of the B rows, on XLA's
// intra-op threads and the caller's. Every thread claims blocks until none is
// left, and the caller waits only for blocks already running: when the pool is
// busy (say with the other direction of a bidirectional layer, waiting the same
// way) the caller runs every block itself rather than wait for a free thread.
template <typename Body>
void over_row_blocks(int64_t B, int64_t blocks, ffi::ThreadPool& pool, Body body) {
  blocks = std::max<int64_t>(1, std::min(blocks, B));
  struct Progress {
    std::atomic<int64_t> claimed{0}, finished{0};
  };
  // Shared, as a task may start after the call returns (and then finds no block).
  auto progress = std::make_shared<Progress>();
  auto work = [progress, blocks, B, body] {
    for (int64_t i; (i = progress->claimed.fetch_add(1)) < blocks;) {
      body(B * i / blocks, B * (i + 1) / blocks);
      progress->finished.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t i = 1; i < blocks; ++i) pool.Schedule(decltype(work)(work));
  work();
  while (progress->finished.load(std::memory_order_acquire) < blocks) std::this_thread::yield();
}

// Rows a thread steps at least, alone: with fewer, the threads split the
// units of every step instead (a persistent RNN, Diamos et al. 2016: each
// keeps its share of w_hh in its own cache, and they meet once per step).
constexpr int64_t kFewRows = 4;

// A wait: a pause, and after a while (the other thread may have lost its
// core on a loaded machine) a yield.
inline void relax(int64_t spins) {
  if (spins < 4096) {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
  } else {
    std::this_thread::yield();
  }
}

// The threads that share the rows: how many joined, and their meetings.
struct Team {
  std::atomic<int64_t> joined{1}, size{0}, arrived{0}, finished{0};
  std::vector<float> shared;  // what every member reads (the forward's states)
};

// What one thread runs: rows [begin, end), units [u0, u1) of each step, alone
// (team null) or as one member of a team.
struct Part {
  int64_t begin, end, u0, u1;
  Team* team = nullptr;
  int64_t round = 0;
  // Returns once every member has called it as often (a no-op alone): what
  // each wrote before it is visible to all after it.
  void sync() {
    if (team == nullptr) return;
    const int64_t size = team->size.load(std::memory_order_relaxed);
    const int64_t target = ++round * size;
    team->arrived.fetch_add(1, std::memory_order_acq_rel);
    for (int64_t spins = 0; team->arrived.load(std::memory_order_acquire) < target; ++spins)
      relax(spins);
  }
  // n floats every member shares, or the thread's own `mine` alone.
  float* shared(int64_t n, std::vector<float>& mine) {
    if (team != nullptr) return team->shared.data();
    mine.resize(n);
    return mine.data();
  }
};

// Runs body(Part&) over the B rows and H units. With enough rows, on blocks of
// rows (over_row_blocks, at least kFewRows each); else a team of up to
// `threads` threads splits the units, in slices of `grain`, and shares
// `shared` floats. The team is whoever starts within a while of the call
// (XLA's pool may be busy: a member nobody runs would stall the others), its
// units split among those present.
template <typename Body>
void over_parts(int64_t B, int64_t H, int64_t grain, int64_t threads, int64_t shared,
                ffi::ThreadPool& pool, Body body) {
  const int64_t slices = (H + grain - 1) / grain, parts = std::min(threads, slices);
  if (B >= 2 * kFewRows || parts < 2) {
    over_row_blocks(B, std::min(threads, std::max<int64_t>(1, B / kFewRows)), pool,
                    [&body, H](int64_t begin, int64_t end) {
                      Part part{begin, end, 0, H};
                      body(part);
                    });
    return;
  }
  auto team = std::make_shared<Team>();
  team->shared.resize(shared);
  auto member = [team, B, H, grain, slices, body](int64_t m, int64_t n) {
    Part part{0, B, std::min(H, slices * m / n * grain), std::min(H, slices * (m + 1) / n * grain),
              team.get()};
    body(part);
  };
  for (int64_t i = 1; i < parts; ++i)
    pool.Schedule([team, parts, member] {
      const int64_t m = team->joined.fetch_add(1);
      if (m >= parts) return;  // too late: the team started without it
      int64_t n;
      for (int64_t spins = 0; (n = team->size.load(std::memory_order_acquire)) == 0; ++spins)
        relax(spins);
      member(m, n);
      team->finished.fetch_add(1, std::memory_order_release);
    });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
  for (int64_t spins = 0; team->joined.load(std::memory_order_acquire) < parts &&
                          std::chrono::steady_clock::now() < deadline; ++spins)
    relax(spins);
  const int64_t n = std::min(parts, team->joined.fetch_add(parts));  // no one joins after
  team->size.store(n, std::memory_order_release);
  member(0, n);
  for (int64_t spins = 0; team->finished.load(std::memory_order_acquire) < n - 1; ++spins)
    relax(spins);
}

// The sequence of a per-step array of H units' steps.
Sequence sequence_of(const ffi::Buffer<ffi::F32>& per_step, int64_t H, int32_t reverse,
                     int32_t batch_major) {
  const auto d = per_step.dimensions();
  return batch_major ? Sequence{d[1], d[0], H, reverse != 0, true}
                     : Sequence{d[0], d[1], H, reverse != 0, false};
}

using F32 = ffi::Buffer<ffi::F32>;
using F32Out = ffi::ResultBuffer<ffi::F32>;
using S32 = ffi::Buffer<ffi::S32>;
using Pred = ffi::Buffer<ffi::PRED>;

// lengths (B,); resets per step (one per row and step, the layout of x); h_r,
// c_r (B, H): the state a reset sets.
bool masks_fit(const Sequence& s, const S32& lengths, const Pred& resets, const F32& h_r,
               const F32& c_r) {
  return lengths.element_count() == size_t(s.B) && resets.element_count() == size_t(s.B * s.T) &&
         h_r.element_count() == size_t(s.B * s.H) && c_r.element_count() == size_t(s.B * s.H);
}

Masks masks_of(const S32& lengths, const Pred& resets, const F32& h_r, const F32& c_r) {
  return Masks{lengths.typed_data(), resets.typed_data(), h_r.typed_data(), c_r.typed_data()};
}

}  // namespace
