// The binary convolution and the fused BatchNorm-sign-pack, written once over a small SIMD interface
// (`Simd`, defined by the including per-ISA file before including this one, inside its own namespace):
//
//   V                      a vector of LANES 64-bit words
//   zero(), load(p), bcast(u64), store(int64_t*, V)
//   xor_and(s, w, m)       (s ^ w) & m
//   and_(a, b)
//   popcnt_add(acc, v)     acc + popcount of each 64-bit lane of v
//   pack_word(x, scale, shift, n, &s, &m)   sign / non-zero bits of n <= 64 channels
//   popcount64(u64)
//   PIX                    output pixels computed per pass (register blocking)
//
// Included once per instruction set; nothing here includes a header.

namespace {

constexpr int OB_CHS = 16;                     // output channels per weight block
constexpr int R = OB_CHS / Simd::LANES;        // vectors per block

void pack_rows(const PackArgs& a, int64_t begin, int64_t end) {
  const int64_t pixw = 2 * a.Wd;
  for (int64_t row = begin; row < end; ++row) {
    const int64_t n = row / a.H, h = row % a.H;
    const float* x = a.x + (n * a.H + h) * a.W * a.C;
    const int64_t prow = (n * a.Hp + h + a.pad) * a.Wp + a.pad;
    uint64_t* o = a.out + prow * pixw;
    int32_t* cnt = a.count + prow;
    for (int64_t w = 0; w < a.W; ++w, x += a.C, o += pixw) {
      int32_t c = 0;
      for (int64_t j = 0; j < a.Wd; ++j) {
        const int64_t c0 = j * 64;
        const int nb = (int)((a.C - c0) < 64 ? (a.C - c0) : 64);
        uint64_t s, m;
        Simd::pack_word(x + c0, a.scale + c0, a.shift + c0, nb, &s, &m);
        o[j] = s;
        o[a.Wd + j] = m;
        c += Simd::popcount64(m);
      }
      cnt[w] = c;
    }
  }
}

// One pixel's 16 output channels from its accumulators (alpha and int_bias are padded to 16 channels).
inline void finish(const typename Simd::V* acc, const typename Simd::V* cnt, bool wmask, int32_t pcm,
                   const int32_t* ibias, const float* alpha, const float* res, float* out, int nc, bool relu) {
#ifdef BNAS_SIMD_FINISH
  Simd::finish(acc, cnt, wmask, pcm, ibias, alpha, res, out, nc, relu);
#else
  int64_t dis[OB_CHS], nz[OB_CHS];
  for (int r = 0; r < R; ++r) {
    Simd::store(dis + r * Simd::LANES, acc[r]);
    if (wmask) Simd::store(nz + r * Simd::LANES, cnt[r]);
  }
  for (int c = 0; c < nc; ++c) {
    const int64_t total = (wmask ? nz[c] : (int64_t)pcm) - 2 * dis[c] + ibias[c];
    float v = alpha[c] * (float)total;
    if (relu) v = v > 0.0f ? v : 0.0f;
    if (res) v += res[c];
    out[c] = v;
  }
#endif
}

template <int NP, bool WMASK>
inline void conv_block(const ConvArgs& a, int64_t n, int64_t ob, int64_t oh, int64_t ow0) {
  typedef typename Simd::V V;
  V acc[NP][R];
  V cnt[NP][R];
  for (int p = 0; p < NP; ++p)
    for (int r = 0; r < R; ++r) { acc[p][r] = Simd::zero(); cnt[p][r] = Simd::zero(); }
  int32_t pcm[NP];
  for (int p = 0; p < NP; ++p) pcm[p] = 0;

  const int64_t pixw = 2 * a.Wd;
  const int64_t taps = a.k * a.k;
  const uint64_t* xim = a.x + n * a.Hp * a.Wp * pixw;
  const int32_t* cim = a.count + n * a.Hp * a.Wp;
  const uint64_t* wb = a.wbits + ob * taps * a.Wd * OB_CHS;
  const uint64_t* wm = WMASK ? a.wmask + ob * taps * a.Wd * OB_CHS : nullptr;
  for (int64_t kh = 0; kh < a.k; ++kh) {
    const int64_t ih = oh * a.stride + kh * a.dil;
    for (int64_t kw = 0; kw < a.k; ++kw) {
      const uint64_t* xp[NP];
      for (int p = 0; p < NP; ++p) {
        const int64_t pix = ih * a.Wp + (ow0 + p) * a.stride + kw * a.dil;
        xp[p] = xim + pix * pixw;
        if (!WMASK) pcm[p] += cim[pix];
      }
      for (int64_t j = 0; j < a.Wd; ++j, wb += OB_CHS) {
        V wv[R], mv[R];
        for (int r = 0; r < R; ++r) {
          wv[r] = Simd::load(wb + r * Simd::LANES);
          if (WMASK) mv[r] = Simd::load(wm + r * Simd::LANES);
        }
        if (WMASK) wm += OB_CHS;
        for (int p = 0; p < NP; ++p) {
          const V s = Simd::bcast(xp[p][j]);
          const V m = Simd::bcast(xp[p][a.Wd + j]);
          for (int r = 0; r < R; ++r) {
            if (WMASK) {
              acc[p][r] = Simd::popcnt_add(acc[p][r], Simd::and_(Simd::xor_and(s, wv[r], m), mv[r]));
              cnt[p][r] = Simd::popcnt_add(cnt[p][r], Simd::and_(m, mv[r]));
            } else {
              acc[p][r] = Simd::popcnt_add(acc[p][r], Simd::xor_and(s, wv[r], m));
            }
          }
        }
      }
    }
  }

  // epilogue: y = alpha * (count - 2 * disagreements + int_bias), relu, + residual
  const int64_t c0 = ob * OB_CHS;
  const int nc = (int)((a.Cout - c0) < OB_CHS ? (a.Cout - c0) : OB_CHS);
  for (int p = 0; p < NP; ++p) {
    const int64_t opix = (n * a.OH + oh) * a.OW + ow0 + p;
    finish(acc[p], cnt[p], WMASK, pcm[p], a.ibias + c0, a.alpha + c0,
           a.residual ? a.residual + opix * a.Cout + c0 : nullptr, a.out + opix * a.Cout + c0, nc, a.relu);
  }
}

template <bool WMASK>
void conv_rows_t(const ConvArgs& a, int64_t begin, int64_t end) {
  for (int64_t t = begin; t < end; ++t) {
    const int64_t n = t / (a.OB * a.OH);
    const int64_t ob = (t / a.OH) % a.OB;
    const int64_t oh = t % a.OH;
    int64_t ow = 0;
    for (; ow + Simd::PIX <= a.OW; ow += Simd::PIX) conv_block<Simd::PIX, WMASK>(a, n, ob, oh, ow);
    const int64_t rem = a.OW - ow;  // < PIX <= 4
    if (rem == 3) conv_block<3, WMASK>(a, n, ob, oh, ow);
    else if (rem == 2) conv_block<2, WMASK>(a, n, ob, oh, ow);
    else if (rem == 1) conv_block<1, WMASK>(a, n, ob, oh, ow);
  }
}

void conv_rows(const ConvArgs& a, int64_t begin, int64_t end) {
  if (a.wmask) conv_rows_t<true>(a, begin, end);
  else conv_rows_t<false>(a, begin, end);
}

}  // namespace
