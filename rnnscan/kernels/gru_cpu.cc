// The recurrence of torch's and cuDNN's GRU (`reset_after`, tanh) over a whole
// sequence, as XLA:CPU custom calls (XLA FFI), on the LSTM kernel's scheme
// (`lstm_cpu.cc`): each thread owns a block of batch rows for the whole
// sequence, a step's product and gate math run on register tiles (a few rows x
// the three gates of one vector of units) with a panel of `w_hh` in cache, and
// the input projection runs a chunk of steps ahead inside the kernel.
//
// Shapes (f32, row-major): T steps, B rows, I inputs, H units, G = 3H gates in
// torch's order (r, z, n). Per-step arrays are (T, B, width), or (B, T, width)
// with `batch_major`. `x` (.., I): the inputs; `w_ih` (I, G) and `w_hh` (H, G)
// in panels of L units (L = kLanes), (H/L, I or H, 3L), each row of a panel
// [r z n] of its L units; `b` (G,) and `b_hn` (H,).
//
// Forward:  xp = x_t @ w_ih + b,  hp = h_{t-1} @ w_hh,
//           r = σ(xp_r + hp_r),  z = σ(xp_z + hp_z),  hn = hp_n + b_hn,
//           n = tanh(xp_n + r hn),  h_t = n + z (h_{t-1} - n).
// `lengths` and `resets` as in the LSTM kernel: past a row's length its state
// is carried and written out unchanged; where `resets` is true on a step read,
// the state is set to h_r first.
//
// The saving forward also writes S = [r z hn n] per step (4H: zero past a
// length). The backward kernel overwrites it, in place, with the cotangents
//   [dr dz d(hn) dn] = [r(1-r) hn dn, z(1-z) (h_{t-1} - n) dh, r dn, dn],
//   dn = (1-z) (1-n²) dh  (of the pre-activations; d(hn) is hn's),
// whose first 3H are hp's cotangent (so dh_{t-1} = z dh + that @ w_hh.T) and
// [dr dz dn] xp's: the JAX side forms the weights' and inputs' gradients from
// them as products over all steps at once.

#include "cpu_common.h"

namespace {

struct Forward {
  Sequence s;
  Masks m;
  int64_t I;  // input features
  const float *x, *w_ih, *w_hh, *b, *b_hn, *h0;
  float* hs;     // every step's h (past a row's length: its state, carried)
  float* saved;  // (.., 4H): r, z, hn, n (0 past the length); null unless saving
};

// Step t of rows [r0, r0 + R), units [u, u + L): xp (R rows, stride ldx) holds
// x_t @ w_ih for the units' 3L gate columns; this computes h_{t-1} @ w_hh into
// a tile of its own (the n gate needs it apart) and finishes the step. h_prev
// (rows H apart) is read and the new h written to h_next. A row past its length
// (valid[r] false) keeps its state.
template <int R>
void forward_tile(const Forward& a, int64_t t, int64_t r0, int64_t u, const bool* valid,
                  const float* h_prev, float* h_next, const float* xp, int64_t ldx) {
  const int64_t H = a.s.H, S = 4 * H;
  constexpr int64_t kWidth = 3 * kLanes;
  alignas(64) float hp[R * kWidth];
  product_tile<R, 3>(h_prev, H, a.w_hh + u * 3 * H, kWidth, H, hp, kWidth);
  for (int r = 0; r < R; ++r) {
    float* h_out = a.hs + a.s.at(t, r0 + r, H) + u;
    float* saved = a.saved != nullptr ? a.saved + a.s.at(t, r0 + r, S) + u : nullptr;
    const vf h = load(h_prev + r * H + u);
    if (!valid[r]) {
      store(h_next + r * H + u, h);
      store(h_out, h);
      if (saved != nullptr)
        for (int g = 0; g < 4; ++g) store(saved + g * H, vf{});
      continue;
    }
    const float* x = xp + r * ldx;
    const float* p = hp + r * kWidth;
    const vf rg = sigmoid(load(x) + load(a.b + u) + load(p));
    const vf zg = sigmoid(load(x + kLanes) + load(a.b + H + u) + load(p + kLanes));
    const vf hn = load(p + 2 * kLanes) + load(a.b_hn + u);
    const vf n = tanh_(load(x + 2 * kLanes) + load(a.b + 2 * H + u) + rg * hn);
    const vf h_new = n + zg * (h - n);
    store(h_next + r * H + u, h_new);
    store(h_out, h_new);
    if (saved != nullptr) {
      store(saved, rg);
      store(saved + H, zg);
      store(saved + 2 * H, hn);
      store(saved + 3 * H, n);
    }
  }
}

// Part p's rows and units of every step, as the LSTM's forward_part: in a
// team the members share h and each writes its units.
void forward_part(const Forward& a, Part& p) {
  const int64_t H = a.s.H, S = 4 * H, begin = p.begin, end = p.end, rows = end - begin,
                T = a.s.T, U = p.u1 - p.u0, width = 3 * U;
  const Tiles tiles(begin, end);
  const int64_t longest = a.m.longest(begin, end, T);
  const int64_t chunk = std::clamp<int64_t>(kProjectedFloats / (rows * width), 1, T);
  thread_local std::vector<float> projected, state;  // kept across calls: no fresh pages
  projected.resize(chunk * rows * width);
  // projected[(s * rows + r) * width + 3(u - u0) + L g + lane]: step s of the
  // chunk, row r, gate g of unit u + lane.
  auto xp_of = [&](int64_t s, int64_t r0) {
    return projected.data() + (s * rows + r0 - begin) * width;
  };
  float* h_prev = p.shared(2 * rows * H, state);
  float* h_next = h_prev + rows * H;
  auto units = [&](const float* from, float* to) {  // the part's units of a row
    std::copy(from + p.u0, from + p.u1, to + p.u0);
  };
  for (int64_t r = 0; r < rows; ++r) units(a.h0 + (begin + r) * H, h_prev + r * H);
  auto time = [&](int64_t step) { return a.s.reverse ? T - 1 - step : step; };
  auto enter = [&](int64_t t) {  // the resets of step t
    for (int64_t r = 0; r < rows; ++r)
      if (t < a.m.length(begin + r, T) && a.m.resets[a.s.at(t, begin + r, 1)])
        units(a.m.h_r + (begin + r) * H, h_prev + r * H);
  };
  enter(time(0));
  p.sync();
  std::unique_ptr<bool[]> valid(new bool[rows]);
  for (int64_t done = 0; done < T; done += chunk) {
    const int64_t steps = std::min(chunk, T - done);
    auto chunk_time = [&](int64_t s) { return time(done + s); };
    project_inputs<3>(a.x, a.s, a.I, a.w_ih, tiles, p.u0, p.u1, steps, longest, chunk_time,
                      xp_of);
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t t = chunk_time(s);
      for (int64_t r = 0; r < rows; ++r) valid[r] = t < a.m.length(begin + r, T);
      if (t >= longest) {  // every row's state carried: no products
        for (int64_t r = 0; r < rows; ++r) {
          units(h_prev + r * H, a.hs + a.s.at(t, begin + r, H));
          if (a.saved != nullptr)
            for (int g = 0; g < 4; ++g)
              std::fill_n(a.saved + a.s.at(t, begin + r, S) + g * H + p.u0, U, 0.0f);
        }
      } else {
        for (int64_t u = p.u0; u < p.u1; u += kLanes)
          for (int64_t tile = 0; tile < tiles.count; ++tile) {
            const int64_t r0 = tiles.start(tile), offset = (r0 - begin) * H;
            with_tile_rows(tiles.start(tile + 1) - r0, [&](auto R) {
              forward_tile<R()>(a, t, r0, u, valid.get() + (r0 - begin), h_prev + offset,
                                h_next + offset, xp_of(s, r0) + 3 * (u - p.u0), width);
            });
          }
        std::swap(h_prev, h_next);
      }
      if (done + s + 1 < T) enter(time(done + s + 1));
      p.sync();
    }
  }
}

struct Backward {
  Sequence s;
  Masks m;
  const float *wt, *h0, *hs, *ghs;  // wt: w_hh.T in panels
  float* gz;  // the saved [r z hn n] on entry, overwritten step by step (0 past a length)
  float *gh0, *gh_r;
};

// gh[r, u:u1] += gz[r, :3H] @ w_hh.T[:, u:u1] for rows [0, R), u1 - u at
// most 4L; wt holds w_hh.T in panels of 4L columns, (ceil(H / 4L), 3H, 4L),
// the last one zero-padded.
template <int R>
void backward_product(const float* gz, int64_t gz_stride, const float* wt, int64_t H, int64_t u,
                      int64_t u1, float* gh) {
  constexpr int64_t kPanel = 4 * kLanes;
  const int64_t K = 3 * H;
  const float* panel = wt + u * K;
  switch (std::min<int64_t>(4, (u1 - u) / kLanes)) {
    case 4: product_tile<R, 4, true>(gz, gz_stride, panel, kPanel, K, gh + u, H); break;
    case 3: product_tile<R, 3, true>(gz, gz_stride, panel, kPanel, K, gh + u, H); break;
    case 2: product_tile<R, 2, true>(gz, gz_stride, panel, kPanel, K, gh + u, H); break;
    default: product_tile<R, 1, true>(gz, gz_stride, panel, kPanel, K, gh + u, H); break;
  }
}

// Part p's rows and units from the last step back, with the cotangent of h
// carried from step to step in gh. A step past a row's length passed its
// state on unchanged (its cotangent flows through, its gz is 0, and so adds
// nothing in the product); a reset cut the state off from the step before
// (its cotangent goes to h_r). In a team, as the LSTM's backward_part.
void backward_part(const Backward& a, Part& p) {
  const int64_t H = a.s.H, S = 4 * H, begin = p.begin, end = p.end, rows = end - begin,
                T = a.s.T, U = p.u1 - p.u0;
  const Tiles tiles(0, rows);  // offsets into this block
  const int64_t gz_stride = a.s.row_stride(S);
  std::vector<float> gh(rows * H, 0.0f);  // the part's units alone
  std::vector<int64_t> length(rows);
  for (int64_t r = 0; r < rows; ++r) length[r] = a.m.length(begin + r, T);
  bool any_reset = false;
  for (int64_t t = 0; t < T && !any_reset; ++t)
    for (int64_t r = begin; r < end && !any_reset; ++r) any_reset = a.m.resets[a.s.at(t, r, 1)];
  for (int64_t r = begin; r < end; ++r) std::fill_n(a.gh_r + r * H + p.u0, U, 0.0f);
  int64_t t = a.s.reverse ? 0 : T - 1;
  for (int64_t step = 0; step < T; ++step, t = a.s.reverse ? t + 1 : t - 1) {
    const bool start = t == a.s.first();  // the forward pass's first step
    const int64_t prev = a.s.reverse ? t + 1 : t - 1;
    bool any_valid = false;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t row = a.s.at(t, begin + r, H), zrow = a.s.at(t, begin + r, S);
      float* gh_row = gh.data() + r * H;
      if (t >= length[r]) {
        for (int64_t k = p.u0; k < p.u1; ++k) gh_row[k] += a.ghs[row + k];
        for (int g = 0; g < 4; ++g) std::fill_n(a.gz + zrow + g * H + p.u0, U, 0.0f);
        continue;
      }
      any_valid = true;
      const bool reset = a.m.resets[a.s.at(t, begin + r, 1)];
      // Past a row's length the states were carried, so hs[prev] is the h
      // this step read, but for a reset.
      const float* h_prev = reset ? a.m.h_r + (begin + r) * H
                            : start ? a.h0 + (begin + r) * H : a.hs + a.s.at(prev, begin + r, H);
      for (int64_t u = p.u0; u < p.u1; u += kLanes) {
        float* gz = a.gz + zrow + u;
        const vf rg = load(gz), zg = load(gz + H), hn = load(gz + 2 * H), n = load(gz + 3 * H);
        const vf gh_t = load(a.ghs + row + u) + load(gh_row + u);
        const vf dn = (1.0f - zg) * (1.0f - n * n) * gh_t;
        store(gz, rg * (1.0f - rg) * hn * dn);
        store(gz + H, zg * (1.0f - zg) * (load(h_prev + u) - n) * gh_t);
        store(gz + 2 * H, rg * dn);
        store(gz + 3 * H, dn);
        store(gh_row + u, zg * gh_t);
      }
    }
    if (!any_valid) continue;  // (the same for every member)
    p.sync();                  // every unit's gz of step t written
    // The carry into the step before: gh += gz_t[:3H] @ w_hh.T, panel by panel
    // of w_hh.T, every tile of rows.
    for (int64_t u = p.u0; u < p.u1; u += 4 * kLanes)
      for (int64_t tile = 0; tile < tiles.count; ++tile) {
        const int64_t r0 = tiles.start(tile), r1 = tiles.start(tile + 1);
        const float* gz = a.gz + a.s.at(t, begin + r0, S);
        with_tile_rows(r1 - r0, [&](auto R) {
          backward_product<R()>(gz, gz_stride, a.wt, H, u, p.u1, gh.data() + r0 * H);
        });
      }
    if (!any_reset) continue;
    for (int64_t r = 0; r < rows; ++r) {
      if (t >= length[r] || !a.m.resets[a.s.at(t, begin + r, 1)]) continue;
      float* gh_row = gh.data() + r * H;
      float* to_h = a.gh_r + (begin + r) * H;
      for (int64_t k = p.u0; k < p.u1; ++k) to_h[k] += gh_row[k];
      std::fill_n(gh_row + p.u0, U, 0.0f);
    }
  }
  for (int64_t r = 0; r < rows; ++r)
    std::copy(gh.data() + r * H + p.u0, gh.data() + r * H + p.u1, a.gh0 + (begin + r) * H + p.u0);
}

// x (.., I): the inputs; w_ih, w_hh: in panels of L units, (H/L, I or H, 3L).
ffi::Error run_forward(F32 x, F32 w_ih, F32 w_hh, F32 b, F32 b_hn, F32 h0, S32 lengths,
                       Pred resets, F32 h_r, int32_t reverse, int32_t batch_major,
                       int32_t threads, ffi::ThreadPool& pool, F32Out& hs, float* saved) {
  const auto xd = x.dimensions(), hd = h0.dimensions();
  const int64_t H = hd.size() == 2 ? hd[1] : 0, G = 3 * H, I = xd.size() == 3 ? xd[2] : 0;
  if (xd.size() != 3 || hd.size() != 2 || hd[0] != xd[batch_major ? 0 : 1] ||
      b.element_count() != size_t(G) || b_hn.element_count() != size_t(H) ||
      w_hh.element_count() != size_t(G * H) || w_ih.element_count() != size_t(G * I))
    return ffi::Error::InvalidArgument("rnnscan_gru: operands of inconsistent shapes");
  const Sequence s = sequence_of(x, H, reverse, batch_major);
  if (!masks_fit(s, lengths, resets, h_r, h_r))
    return ffi::Error::InvalidArgument("rnnscan_gru: lengths or resets of the wrong shape");
  const Masks m{lengths.typed_data(), resets.typed_data(), h_r.typed_data(), nullptr};
  const Forward a{s, m, I, x.typed_data(), w_ih.typed_data(), w_hh.typed_data(),
                  b.typed_data(), b_hn.typed_data(), h0.typed_data(), hs->typed_data(), saved};
  over_parts(a.s.B, H, kLanes, threads, 2 * a.s.B * H, pool,
             [&a](Part& p) { forward_part(a, p); });
  return ffi::Error::Success();
}

ffi::Error gru_forward(F32 x, F32 w_ih, F32 w_hh, F32 b, F32 b_hn, F32 h0, S32 lengths,
                       Pred resets, F32 h_r, int32_t reverse, int32_t batch_major,
                       int32_t threads, ffi::ThreadPool pool, F32Out hs) {
  return run_forward(x, w_ih, w_hh, b, b_hn, h0, lengths, resets, h_r, reverse, batch_major,
                     threads, pool, hs, nullptr);
}

ffi::Error gru_forward_saving(F32 x, F32 w_ih, F32 w_hh, F32 b, F32 b_hn, F32 h0, S32 lengths,
                              Pred resets, F32 h_r, int32_t reverse, int32_t batch_major,
                              int32_t threads, ffi::ThreadPool pool, F32Out hs, F32Out saved) {
  return run_forward(x, w_ih, w_hh, b, b_hn, h0, lengths, resets, h_r, reverse, batch_major,
                     threads, pool, hs, saved->typed_data());
}

// wt: w_hh.T in panels of 4L units, (ceil(H/4L), 3H, 4L). `saved` and `gz`
// share one buffer (an input-output alias), read and then overwritten step by step.
ffi::Error gru_backward(F32 wt, F32 h0, F32 hs, F32 ghs, F32 saved, S32 lengths, Pred resets,
                        F32 h_r, int32_t reverse, int32_t batch_major, int32_t threads,
                        ffi::ThreadPool pool, F32Out gz, F32Out gh0, F32Out gh_r) {
  const Sequence s = sequence_of(saved, h0.dimensions()[1], reverse, batch_major);
  if (!masks_fit(s, lengths, resets, h_r, h_r) || hs.element_count() != size_t(s.T * s.B * s.H) ||
      ghs.element_count() != hs.element_count() || saved.dimensions()[2] != 4 * s.H)
    return ffi::Error::InvalidArgument("rnnscan_gru_backward: operands of inconsistent shapes");
  const Masks m{lengths.typed_data(), resets.typed_data(), h_r.typed_data(), nullptr};
  const Backward a{s, m, wt.typed_data(), h0.typed_data(), hs.typed_data(), ghs.typed_data(),
                   gz->typed_data(), gh0->typed_data(), gh_r->typed_data()};
  over_parts(a.s.B, s.H, 4 * kLanes, threads, 0, pool, [&a](Part& p) { backward_part(a, p); });
  return ffi::Error::Success();
}

// The forward kernels' operands and attributes.
auto forward_binding() {
  return ffi::Ffi::Bind()
      .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()  // x .. h0
      .Arg<S32>().Arg<Pred>().Arg<F32>()  // lengths, resets, h_r
      .Attr<int32_t>("reverse").Attr<int32_t>("batch_major").Attr<int32_t>("threads")
      .Ctx<ffi::ThreadPool>();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RNNSCAN_TARGET(rnnscan_gru_forward), gru_forward,
                              forward_binding().Ret<F32>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RNNSCAN_TARGET(rnnscan_gru_forward_saving), gru_forward_saving,
                              forward_binding().Ret<F32>().Ret<F32>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RNNSCAN_TARGET(rnnscan_gru_backward), gru_backward,
                              ffi::Ffi::Bind()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>()  // wt, h0, hs, ghs, saved
                                  .Arg<S32>().Arg<Pred>().Arg<F32>()  // lengths, resets, h_r
                                  .Attr<int32_t>("reverse").Attr<int32_t>("batch_major")
                                  .Attr<int32_t>("threads")
                                  .Ctx<ffi::ThreadPool>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>());

// The FFI handlers defined above, before the variant's suffix, comma-separated:
// the loader registers each of them (as jax's examples/ffi loops over its
// registrations), so their names are written here alone.
extern "C" const char* RNNSCAN_TARGET(rnnscan_targets)() {
  return "rnnscan_gru_forward,rnnscan_gru_forward_saving,rnnscan_gru_backward";
}

// The variant's vector width, which the JAX side lays the weights out by, and
// the hash of the source it was built from (build.py's source_hash).
extern "C" int RNNSCAN_TARGET(rnnscan_lanes)() { return kLanes; }
extern "C" const char* RNNSCAN_TARGET(rnnscan_source)() { return RNNSCAN_SOURCE_HASH; }
