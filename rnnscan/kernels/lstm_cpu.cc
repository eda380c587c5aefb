// The recurrence of a plain LSTM (tanh, no peepholes, clipping or projection)
// over a whole sequence, as XLA:CPU custom calls (XLA FFI).
//
// Why a kernel: XLA:CPU runs a scan step as a few thunks (the recurrent product,
// the gate math), and pays a hand-off between them, and between the cores that
// share a product, several times a step. Here each thread owns a block of batch
// rows for the whole sequence: rows of an LSTM never meet, so the threads never
// wait on each other, and a step's product and gate math run on register
// tiles (a few rows x the four gates of one vector of units, sized per
// instruction set below) with a panel of `w_hh` in cache.
//
// Shapes (f32, row-major): T steps, B rows, I inputs, H units, G = 4H gates
// in torch's order (i, f, j, o). Per-step arrays are (T, B, width), or
// (B, T, width) with `batch_major`. `x` (.., I): the inputs; `w_ih` (I, G) and
// `w_hh` (H, G) in panels of L units (L = kLanes, the floats of one vector),
// (H/L, I or H, 4L), each row of a panel [i f j o] of its L units; `b` (G,).
//
// Forward:  z = x_t @ w_ih + h_{t-1} @ w_hh + b;  c_t = σ(f) c_{t-1} + σ(i) tanh(j);
//           h_t = σ(o) tanh(c_t).
// The input projection runs a chunk of steps ahead inside the kernel, so no
// (.., G) array of projected inputs is ever written (XLA:CPU hands out fresh
// pages for large temporaries on every call, and a page's first touch costs).
// `lengths` (B,) pad the rows: a row r is read for t < lengths[r] (from
// lengths[r] - 1 down to 0 with `reverse`); past that its state is carried and
// written out unchanged (the JAX side zeroes the outputs). Where `resets` (per
// step) is true on a step read, the state is set to (h_r, c_r) first.
//
// The saving forward also writes the gates' activations a_t = [σ(i) σ(f)
// tanh(j) σ(o)]; with c_{t-1} and c_t they give the tangent
//   dz_t = dz_in_t + dh_{t-1} @ w_hh,  u = dz_t q_t,
//   dc_t = u_i + u_f + u_j + σ(f) dc_{t-1},  dh_t = u_o + σ(o) (1 - tanh² c_t) dc_t,
// q_t = each activation's derivative times the factor it meets ([tanh j,
// c_{t-1}, σ(i), tanh c_t]). The backward kernel is its transpose; it writes
// dz over the saved activations, in place.

#include "cpu_common.h"

namespace {

struct Forward {
  Sequence s;
  Masks m;
  int64_t I;  // input features
  const float *x, *w_ih, *w_hh, *b, *h0, *c0;
  float* hs;      // every step's h (past a row's length: its state, carried)
  float* cs;      // every step's c; or null, and then
  float* c_last;  // (B, H): the last step's c alone
  float* gates;   // (.., G): σ(i), σ(f), tanh(j), σ(o) (0 past the length); null unless saving
};

// Step t of rows [r0, r0 + R), units [u, u + L): z (R rows, stride ldz) holds
// x_t @ w_ih for the units' 4L gate columns; this adds h_{t-1} @ w_hh and b and
// finishes the step. h (rows of h_prev, H apart) is read and the new one
// written to h_next; c (rows H apart) is updated in place. A row past its
// length (valid[r] false) keeps its state.
template <int R>
void forward_tile(const Forward& a, int64_t t, int64_t r0, int64_t u, const bool* valid,
                  const float* h_prev, float* h_next, float* c, float* z, int64_t ldz) {
  const int64_t H = a.s.H, G = 4 * H;
  product_tile<R, 4, true>(h_prev, H, a.w_hh + u * 4 * H, 4 * kLanes, H, z, ldz);
  for (int r = 0; r < R; ++r) {
    float* h_out = a.hs + a.s.at(t, r0 + r, H) + u;
    float* c_r = c + r * H + u;
    float* gates = a.gates != nullptr ? a.gates + a.s.at(t, r0 + r, G) + u : nullptr;
    if (!valid[r]) {
      const vf h = load(h_prev + r * H + u);
      store(h_next + r * H + u, h);
      store(h_out, h);
      if (a.cs != nullptr) store(a.cs + a.s.at(t, r0 + r, H) + u, load(c_r));
      if (gates != nullptr)
        for (int g = 0; g < 4; ++g) store(gates + g * H, vf{});
      continue;
    }
    vf gate[4];
    for (int g = 0; g < 4; ++g) gate[g] = load(z + r * ldz + g * kLanes) + load(a.b + g * H + u);
    const vf i = sigmoid(gate[0]), f = sigmoid(gate[1]);
    const vf j = tanh_(gate[2]), o = sigmoid(gate[3]);
    const vf c_new = f * load(c_r) + i * j;
    const vf h = o * tanh_(c_new);
    store(h_next + r * H + u, h);
    store(h_out, h);
    store(c_r, c_new);
    if (a.cs != nullptr) store(a.cs + a.s.at(t, r0 + r, H) + u, c_new);
    if (gates != nullptr) {
      store(gates, i);
      store(gates + H, f);
      store(gates + 2 * H, j);
      store(gates + 3 * H, o);
    }
  }
}

// Part p's rows and units of every step. In a team, the members share the
// states (h, c) and each writes its units; a reset is applied at the end of
// the step before (`enter`), so that one meeting per step suffices.
void forward_part(const Forward& a, Part& p) {
  const int64_t H = a.s.H, G = 4 * H, begin = p.begin, end = p.end, rows = end - begin,
                T = a.s.T, U = p.u1 - p.u0, width = 4 * U;
  const Tiles tiles(begin, end);
  // Steps at or past every row's length only carry the states (both ways:
  // with `reverse` a row is read from its length - 1 down to 0).
  const int64_t longest = a.m.longest(begin, end, T);
  // The input projection runs a chunk of steps ahead of the recurrence.
  const int64_t chunk = std::clamp<int64_t>(kProjectedFloats / (rows * width), 1, T);
  thread_local std::vector<float> projected, state;  // kept across calls: no fresh pages
  projected.resize(chunk * rows * width);
  // projected[(s * rows + r) * width + 4(u - u0) + L g + lane]: step s of the
  // chunk, row r, gate g of unit u + lane.
  auto z_of = [&](int64_t s, int64_t r0) {
    return projected.data() + (s * rows + r0 - begin) * width;
  };
  // The rows' h (read, and the next one written) and c, from step to step.
  float* h_prev = p.shared(3 * rows * H, state);
  float *h_next = h_prev + rows * H, *c = h_next + rows * H;
  auto units = [&](const float* from, float* to) {  // the part's units of a row
    std::copy(from + p.u0, from + p.u1, to + p.u0);
  };
  for (int64_t r = 0; r < rows; ++r) {
    units(a.h0 + (begin + r) * H, h_prev + r * H);
    units(a.c0 + (begin + r) * H, c + r * H);
  }
  auto time = [&](int64_t step) { return a.s.reverse ? T - 1 - step : step; };
  auto enter = [&](int64_t t) {  // the resets of step t
    for (int64_t r = 0; r < rows; ++r)
      if (t < a.m.length(begin + r, T) && a.m.resets[a.s.at(t, begin + r, 1)]) {
        units(a.m.h_r + (begin + r) * H, h_prev + r * H);
        units(a.m.c_r + (begin + r) * H, c + r * H);
      }
  };
  enter(time(0));
  p.sync();
  std::unique_ptr<bool[]> valid(new bool[rows]);
  for (int64_t done = 0; done < T; done += chunk) {
    const int64_t steps = std::min(chunk, T - done);
    auto chunk_time = [&](int64_t s) { return time(done + s); };
    project_inputs<4>(a.x, a.s, a.I, a.w_ih, tiles, p.u0, p.u1, steps, longest, chunk_time,
                      z_of);
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t t = chunk_time(s);
      for (int64_t r = 0; r < rows; ++r) valid[r] = t < a.m.length(begin + r, T);
      if (t >= longest) {  // every row's state carried: no products
        for (int64_t r = 0; r < rows; ++r) {
          units(h_prev + r * H, a.hs + a.s.at(t, begin + r, H));
          if (a.cs != nullptr) units(c + r * H, a.cs + a.s.at(t, begin + r, H));
          if (a.gates != nullptr)
            for (int g = 0; g < 4; ++g)
              std::fill_n(a.gates + a.s.at(t, begin + r, G) + g * H + p.u0, U, 0.0f);
        }
      } else {
        // Panel by panel, every tile of rows: a panel of w_hh stays in cache for all.
        for (int64_t u = p.u0; u < p.u1; u += kLanes)
          for (int64_t tile = 0; tile < tiles.count; ++tile) {
            const int64_t r0 = tiles.start(tile), offset = (r0 - begin) * H;
            with_tile_rows(tiles.start(tile + 1) - r0, [&](auto R) {
              forward_tile<R()>(a, t, r0, u, valid.get() + (r0 - begin), h_prev + offset,
                                h_next + offset, c + offset, z_of(s, r0) + 4 * (u - p.u0),
                                width);
            });
          }
        std::swap(h_prev, h_next);
      }
      if (done + s + 1 < T) enter(time(done + s + 1));
      p.sync();
    }
  }
  if (a.c_last != nullptr)
    for (int64_t r = 0; r < rows; ++r) units(c + r * H, a.c_last + (begin + r) * H);
}

struct Backward {
  Sequence s;
  Masks m;
  const float *wt, *c0, *cs, *ghs;  // wt: w_hh.T in panels
  const float* gcs;  // null when c's cotangent is zero
  float* gz;  // the saved gates on entry, overwritten step by step with dz (0 past a length)
  float *gh0, *gc0, *gh_r, *gc_r;
};

// gh[r, u:u1] = gz[r, :] @ w_hh.T[:, u:u1] for rows [0, R), u1 - u at most
// 4L; wt holds w_hh.T in panels of 4L columns, (ceil(H / 4L), G, 4L), the
// last one zero-padded.
template <int R>
void backward_product(const float* gz, int64_t gz_stride, const float* wt, int64_t H, int64_t u,
                      int64_t u1, float* gh) {
  constexpr int64_t kPanel = 4 * kLanes;
  const int64_t G = 4 * H;
  const float* panel = wt + u * G;
  switch (std::min<int64_t>(4, (u1 - u) / kLanes)) {
    case 4: product_tile<R, 4>(gz, gz_stride, panel, kPanel, G, gh + u, H); break;
    case 3: product_tile<R, 3>(gz, gz_stride, panel, kPanel, G, gh + u, H); break;
    case 2: product_tile<R, 2>(gz, gz_stride, panel, kPanel, G, gh + u, H); break;
    default: product_tile<R, 1>(gz, gz_stride, panel, kPanel, G, gh + u, H); break;
  }
}

// Part p's rows and units from the last step back, with the cotangents of h
// and c carried from step to step in gh, gc. A step past a row's length passed
// its state on unchanged (so its cotangents flow through, and its dz is 0); a
// reset cut the state off from the step before (its cotangents go to h_r,
// c_r). In a team each member writes its units of dz, meets the others, and
// forms its units of the carry from every unit's dz.
void backward_part(const Backward& a, Part& p) {
  const int64_t H = a.s.H, G = 4 * H, begin = p.begin, end = p.end, rows = end - begin,
                T = a.s.T, U = p.u1 - p.u0;
  const Tiles tiles(0, rows);  // offsets into this block
  const int64_t gz_stride = a.s.row_stride(G);
  std::vector<float> gh(rows * H, 0.0f), gc(rows * H, 0.0f);  // the part's units alone
  std::vector<int64_t> length(rows);
  bool padded = false;
  for (int64_t r = 0; r < rows; ++r) {
    length[r] = a.m.length(begin + r, T);
    padded |= length[r] < T;
  }
  // Without padding nor resets, the products write the carry directly.
  bool any_reset = false;
  for (int64_t t = 0; t < T && !any_reset; ++t)
    for (int64_t r = begin; r < end && !any_reset; ++r) any_reset = a.m.resets[a.s.at(t, r, 1)];
  std::vector<float> product(padded || any_reset ? rows * H : 0);
  for (int64_t r = begin; r < end; ++r) {
    std::fill_n(a.gh_r + r * H + p.u0, U, 0.0f);
    std::fill_n(a.gc_r + r * H + p.u0, U, 0.0f);
  }
  int64_t t = a.s.reverse ? 0 : T - 1;
  for (int64_t step = 0; step < T; ++step, t = a.s.reverse ? t + 1 : t - 1) {
    const bool start = t == a.s.first();  // the forward pass's first step
    const int64_t prev = a.s.reverse ? t + 1 : t - 1;
    bool any_valid = false;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t row = a.s.at(t, begin + r, H), zrow = a.s.at(t, begin + r, G);
      float* gh_row = gh.data() + r * H;
      float* gc_row = gc.data() + r * H;
      if (t >= length[r]) {
        for (int64_t k = p.u0; k < p.u1; ++k) gh_row[k] += a.ghs[row + k];
        if (a.gcs != nullptr)
          for (int64_t k = p.u0; k < p.u1; ++k) gc_row[k] += a.gcs[row + k];
        for (int g = 0; g < 4; ++g) std::fill_n(a.gz + zrow + g * H + p.u0, U, 0.0f);
        continue;
      }
      any_valid = true;
      const bool reset = a.m.resets[a.s.at(t, begin + r, 1)];
      // Past a row's length the states were carried, so cs[prev] is the c
      // this step read, but for a reset.
      const float* c_prev = reset ? a.m.c_r + (begin + r) * H
                            : start ? a.c0 + (begin + r) * H : a.cs + a.s.at(prev, begin + r, H);
      for (int64_t u = p.u0; u < p.u1; u += kLanes) {
        float* gz = a.gz + zrow + u;
        const vf i = load(gz), f = load(gz + H), j = load(gz + 2 * H), o = load(gz + 3 * H);
        const vf tc = tanh_(load(a.cs + row + u));
        const vf gh_t = load(a.ghs + row + u) + load(gh_row + u);
        const vf gc_in = a.gcs != nullptr ? load(a.gcs + row + u) : vf{};
        const vf gc_t = gc_in + load(gc_row + u) + o * (1.0f - tc * tc) * gh_t;
        store(gz, i * (1.0f - i) * j * gc_t);
        store(gz + H, f * (1.0f - f) * load(c_prev + u) * gc_t);
        store(gz + 2 * H, (1.0f - j * j) * i * gc_t);
        store(gz + 3 * H, o * (1.0f - o) * tc * gh_t);
        store(gc_row + u, f * gc_t);
      }
    }
    if (!any_valid) continue;  // (the same for every member)
    p.sync();                  // every unit's dz of step t written
    // The carry into the step before: gh = gz_t @ w_hh.T, panel by panel of w_hh.T,
    // every tile of rows.
    float* out = product.empty() ? gh.data() : product.data();
    for (int64_t u = p.u0; u < p.u1; u += 4 * kLanes)
      for (int64_t tile = 0; tile < tiles.count; ++tile) {
        const int64_t r0 = tiles.start(tile), r1 = tiles.start(tile + 1);
        const float* gz = a.gz + a.s.at(t, begin + r0, G);
        with_tile_rows(r1 - r0, [&](auto R) {
          backward_product<R()>(gz, gz_stride, a.wt, H, u, p.u1, out + r0 * H);
        });
      }
    if (product.empty()) continue;
    for (int64_t r = 0; r < rows; ++r) {
      if (t >= length[r]) continue;
      float* gh_row = gh.data() + r * H;
      float* gc_row = gc.data() + r * H;
      const float* product_row = product.data() + r * H;
      if (a.m.resets[a.s.at(t, begin + r, 1)]) {
        float *to_h = a.gh_r + (begin + r) * H, *to_c = a.gc_r + (begin + r) * H;
        for (int64_t k = p.u0; k < p.u1; ++k) {
          to_h[k] += product_row[k];
          to_c[k] += gc_row[k];
        }
        std::fill_n(gh_row + p.u0, U, 0.0f);
        std::fill_n(gc_row + p.u0, U, 0.0f);
      } else {
        std::copy(product_row + p.u0, product_row + p.u1, gh_row + p.u0);
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    std::copy(gh.data() + r * H + p.u0, gh.data() + r * H + p.u1, a.gh0 + (begin + r) * H + p.u0);
    std::copy(gc.data() + r * H + p.u0, gc.data() + r * H + p.u1, a.gc0 + (begin + r) * H + p.u0);
  }
}

// x (.., I): the inputs; w_ih, w_hh: in panels of L units, (H/L, I or H, 4L).
ffi::Error run_forward(F32 x, F32 w_ih, F32 w_hh, F32 b, F32 h0, F32 c0, S32 lengths,
                       Pred resets, F32 h_r, F32 c_r, int32_t reverse, int32_t batch_major,
                       int32_t threads, ffi::ThreadPool& pool, F32Out& hs, float* cs,
                       float* c_last, float* gates) {
  const auto xd = x.dimensions(), hd = h0.dimensions();
  const int64_t H = hd.size() == 2 ? hd[1] : 0, G = 4 * H, I = xd.size() == 3 ? xd[2] : 0;
  if (xd.size() != 3 || hd.size() != 2 || c0.element_count() != h0.element_count() ||
      hd[0] != xd[batch_major ? 0 : 1] || b.element_count() != size_t(G) ||
      w_hh.element_count() != size_t(G * H) || w_ih.element_count() != size_t(G * I))
    return ffi::Error::InvalidArgument("rnnscan_lstm: operands of inconsistent shapes");
  const Sequence s = sequence_of(x, H, reverse, batch_major);
  if (!masks_fit(s, lengths, resets, h_r, c_r))
    return ffi::Error::InvalidArgument("rnnscan_lstm: lengths or resets of the wrong shape");
  const Forward a{s, masks_of(lengths, resets, h_r, c_r), I, x.typed_data(), w_ih.typed_data(),
                  w_hh.typed_data(), b.typed_data(), h0.typed_data(), c0.typed_data(),
                  hs->typed_data(), cs, c_last, gates};
  over_parts(a.s.B, H, kLanes, threads, 3 * a.s.B * H, pool,
             [&a](Part& p) { forward_part(a, p); });
  return ffi::Error::Success();
}

// The states without cs: hs and the last c.
ffi::Error lstm_forward(F32 x, F32 w_ih, F32 w_hh, F32 b, F32 h0, F32 c0, S32 lengths,
                        Pred resets, F32 h_r, F32 c_r, int32_t reverse, int32_t batch_major,
                        int32_t threads, ffi::ThreadPool pool, F32Out hs, F32Out c_last) {
  return run_forward(x, w_ih, w_hh, b, h0, c0, lengths, resets, h_r, c_r, reverse, batch_major,
                     threads, pool, hs, nullptr, c_last->typed_data(), nullptr);
}

ffi::Error lstm_forward_saving(F32 x, F32 w_ih, F32 w_hh, F32 b, F32 h0, F32 c0, S32 lengths,
                               Pred resets, F32 h_r, F32 c_r, int32_t reverse,
                               int32_t batch_major, int32_t threads, ffi::ThreadPool pool,
                               F32Out hs, F32Out cs, F32Out gates) {
  return run_forward(x, w_ih, w_hh, b, h0, c0, lengths, resets, h_r, c_r, reverse, batch_major,
                     threads, pool, hs, cs->typed_data(), nullptr, gates->typed_data());
}

// wt: w_hh.T in panels of 4L units, (ceil(H/4L), G, 4L). `gates` and `gz` share
// one buffer (an input-output alias), read and then overwritten step by step.
// Without `has_gcs`, gcs is a placeholder for zeros.
ffi::Error lstm_backward(F32 wt, F32 c0, F32 cs, F32 ghs, F32 gcs, F32 gates, S32 lengths,
                         Pred resets, F32 c_r, int32_t reverse, int32_t batch_major,
                         int32_t threads, int32_t has_gcs, ffi::ThreadPool pool, F32Out gz,
                         F32Out gh0, F32Out gc0, F32Out gh_r, F32Out gc_r) {
  const Sequence s = sequence_of(gates, c0.dimensions()[1], reverse, batch_major);
  if (!masks_fit(s, lengths, resets, c_r, c_r) || cs.element_count() != size_t(s.T * s.B * s.H))
    return ffi::Error::InvalidArgument("rnnscan_lstm_backward: operands of inconsistent shapes");
  const Masks m{lengths.typed_data(), resets.typed_data(), nullptr, c_r.typed_data()};
  const Backward a{s, m, wt.typed_data(), c0.typed_data(),
                   cs.typed_data(), ghs.typed_data(), has_gcs ? gcs.typed_data() : nullptr,
                   gz->typed_data(), gh0->typed_data(), gc0->typed_data(), gh_r->typed_data(),
                   gc_r->typed_data()};
  over_parts(a.s.B, s.H, 4 * kLanes, threads, 0, pool, [&a](Part& p) { backward_part(a, p); });
  return ffi::Error::Success();
}

// The forward kernels' operands and attributes.
auto forward_binding() {
  return ffi::Ffi::Bind()
      .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()  // x .. c0
      .Arg<S32>().Arg<Pred>().Arg<F32>().Arg<F32>()  // lengths, resets, h_r, c_r
      .Attr<int32_t>("reverse").Attr<int32_t>("batch_major").Attr<int32_t>("threads")
      .Ctx<ffi::ThreadPool>();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RNNSCAN_TARGET(rnnscan_lstm_forward), lstm_forward,
                              forward_binding().Ret<F32>().Ret<F32>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RNNSCAN_TARGET(rnnscan_lstm_forward_saving), lstm_forward_saving,
                              forward_binding().Ret<F32>().Ret<F32>().Ret<F32>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RNNSCAN_TARGET(rnnscan_lstm_backward), lstm_backward,
                              ffi::Ffi::Bind()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>()  // wt, c0, cs, ghs, gcs, gates
                                  .Arg<S32>().Arg<Pred>().Arg<F32>()  // lengths, resets, c_r
                                  .Attr<int32_t>("reverse").Attr<int32_t>("batch_major")
                                  .Attr<int32_t>("threads").Attr<int32_t>("has_gcs")
                                  .Ctx<ffi::ThreadPool>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>());

// The FFI handlers defined above, before the variant's suffix, comma-separated:
// the loader registers each of them (as jax's examples/ffi loops over its
// registrations), so their names are written here alone.
extern "C" const char* RNNSCAN_TARGET(rnnscan_targets)() {
  return "rnnscan_lstm_forward,rnnscan_lstm_forward_saving,rnnscan_lstm_backward";
}

// The variant's vector width, which the JAX side lays the weights out by, and
// the hash of the source it was built from (build.py's source_hash).
extern "C" int RNNSCAN_TARGET(rnnscan_lanes)() { return kLanes; }
extern "C" const char* RNNSCAN_TARGET(rnnscan_source)() { return RNNSCAN_SOURCE_HASH; }
