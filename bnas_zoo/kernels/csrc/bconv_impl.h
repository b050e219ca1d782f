// The fused BatchNorm-sign-pack and the binary GEMM with its epilogue, written once over a small SIMD interface
// (`Simd`, defined by the including per-ISA file before including this one, inside its own namespace):
//
//   V                      a vector of LANES 64-bit words;  A  a popcount accumulator
//   zero(), load(p), bcast(u64), xor_(a, b), and_(a, b)
//   acc_zero(), acc_add(A, V)         add the popcount of each lane (A may count in bytes: see FLUSH)
//   acc_flush(V total, A)             total + the 64-bit lane sums of A
//   store32(int32_t*, V)              the LANES 64-bit lanes (small counts) as int32
//   out<RELU, RES>(V cnt, base, alpha, res, out)   LANES outputs alpha * [max](base - 2 cnt, 0) [+ res]
//   FLUSH                             words an A may take before it must be flushed
//   NP                                output pixels per register block
//   pack_word(x, scale, shift, n, &s, &m)   sign / non-zero bits of n <= 64 channels
//   PACK_ROW, pack_row(x, next, ldx, W, scale, shift, C, s, z, plane)   (PACK_ROW = 1 only) the sign and zero
//                                     words of a row of W pixels (word j of pixel w at s[j * plane + w]), the
//                                     row `next` prefetched meanwhile
//   popcount64(u64)
//
// The packed input is word-major (plane j holds word j of every pixel). The GEMM reads each output pixel's Kw
// reduction words: a 1x1 conv reads them in place from the packed planes; a k x k conv from an im2col of the
// taps' bits, packed densely (no bits wasted between taps when C is not a multiple of 64), built once per output
// row from the zero-bordered planes, word-major too, with vector shifts and ors over the row's pixels. (Reading
// the taps of a multiple of 64 channels in place, tap by tap, measured ~10 % slower than the im2col.) The
// epilogue of a block of output channels works on the counts in registers.
//
// Included once per instruction set, inside its namespace; nothing here includes a header (no inline library
// code is compiled with the file's target options), and everything is in an anonymous namespace.

namespace {

// The inner loop and the register epilogue are inlined into each block-row loop whatever the compiler's size
// heuristics decide (out of line, the counts go through memory and a tenth or more of the time is lost).
#define BNAS_HOT inline __attribute__((always_inline))

typedef Simd::V V;
typedef Simd::A A;
constexpr int LANES = Simd::LANES;
constexpr int RFULL = OB_CHS / LANES;  // vectors per full block of output channels

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
inline uint64_t low_bits(int64_t n) { return n >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << n) - 1); }

// One pixel's Wd sign and zero words, every channel read from x (x: its channels-last row; s, z: its word 0, word j
// at s[j * a.npix]): whole words of 64, the last one of C - 64 (Wd - 1); returns its zero bits ORed (non-zero when
// a channel is zero).
inline uint64_t pack_pixel_all(const PackArgs& a, const float* x, uint64_t* s, uint64_t* z) {
  uint64_t any = 0;
  for (int64_t j = 0; j < a.Wd; ++j) {
    const int n = (int)imin(64, a.C - 64 * j);
    uint64_t sb, m;
    Simd::pack_word(x + 64 * j, a.scale + 64 * j, a.shift + 64 * j, n, &sb, &m);
    const uint64_t zb = ~m & low_bits(n);
    s[j * a.npix] = sb;
    z[j * a.npix] = zb;
    any |= zb;
  }
  return any;
}

// A whole row of W pixels, every channel read from x, 16 channels at a time across the row (their scale and
// shift stay in registers): the instruction sets that store compare masks as halfwords (PACK_ROW); returns
// false, having done nothing, for the others.
template <typename S = Simd>
inline bool pack_row_all(const PackArgs& a, const float* x, const float* next, int64_t pix0, int64_t& zero_pixels) {
  if constexpr (S::PACK_ROW) {
    S::pack_row(x, next, a.ldx, a.W, a.scale, a.shift, a.C, a.s + pix0, a.z + pix0, a.npix);
    for (int64_t w = 0; w < a.W; ++w) {
      uint64_t any = 0;
      for (int64_t j = 0; j < a.Wd; ++j) any |= a.z[j * a.npix + pix0 + w];
      a.zflag[pix0 + w] = any != 0;
      zero_pixels += any != 0;
    }
    return true;
  } else {
    return false;
  }
}

// The same for channels [lo, hi) read from x (x's channel 0 is channel lo), the others constant (const_s, const_z).
inline uint64_t pack_pixel_range(const PackArgs& a, const float* x, uint64_t* s, uint64_t* z) {
  uint64_t any = 0;
  for (int64_t j = 0; j < a.Wd; ++j) {
    const int64_t c0 = j * 64, c1 = imin(a.C, c0 + 64);
    uint64_t sb = a.const_s ? a.const_s[j] : 0, zb = a.const_z ? a.const_z[j] : 0;
    const int64_t l0 = imax(c0, a.lo), l1 = imin(c1, a.hi);
    if (l0 < l1) {
      uint64_t ls, lm;
      Simd::pack_word(x + (l0 - a.lo), a.scale + l0, a.shift + l0, (int)(l1 - l0), &ls, &lm);
      const int sh = (int)(l0 - c0);
      sb |= ls << sh;
      zb |= (~lm & low_bits(l1 - l0)) << sh;
    }
    s[j * a.npix] = sb;
    z[j * a.npix] = zb;
    any |= zb;
  }
  return any;
}

// Zero pixels [p, p + count) of the bordered planes (a part of the padding).
inline void zero_border(const PackArgs& a, int64_t p, int64_t count) {
  for (int64_t j = 0; j < a.Wd; ++j) {
    memset(a.s + j * a.npix + p, 0, count * sizeof(uint64_t));
    memset(a.z + j * a.npix + p, 0, count * sizeof(uint64_t));
  }
  memset(a.zflag + p, 0, count);
}

// Rows [begin, end) of the N * H input rows into the bordered planes, with the padding around them (the
// padded row's ends; the pad rows above the first and below the last row); returns the pixels holding a zero.
int64_t pack_rows(const PackArgs& a, int64_t begin, int64_t end) {
  int64_t zero_pixels = 0;
  const bool all = a.lo == 0 && a.hi == a.C;  // no range logic per word
  for (int64_t row = begin; row < end; ++row) {
    const int64_t n = row / a.H, h = row % a.H;
    const int64_t pix0 = (n * a.Hp + h + a.pad) * a.Wp + a.pad;
    if (a.pad) {
      zero_border(a, pix0 - a.pad, a.pad);
      zero_border(a, pix0 + a.W, a.pad);
      if (h == 0) zero_border(a, n * a.Hp * a.Wp, a.pad * a.Wp);
      if (h == a.H - 1) zero_border(a, (n * a.Hp + a.H + a.pad) * a.Wp, a.pad * a.Wp);
    }
    const float* x = a.x + (n * a.H + h) * a.W * a.ldx;
    const float* next = row + 1 < end ? x + a.W * a.ldx : x;  // (the rows after `end` are another thread's)
    if (all && pack_row_all(a, x, next, pix0, zero_pixels)) continue;
    for (int64_t w = 0; w < a.W; ++w) {
      const uint64_t any = all ? pack_pixel_all(a, x + w * a.ldx, a.s + pix0 + w, a.z + pix0 + w)
                               : pack_pixel_range(a, x + w * a.ldx, a.s + pix0 + w, a.z + pix0 + w);
      a.zflag[pix0 + w] = any != 0;
      zero_pixels += any != 0;
    }
  }
  return zero_pixels;
}

// The Kw words of one pixel's K bits of `plane` (dense: taps packed one after the other; the padded taps read
// the zero border), stored one after the other; top_left: the pixel index of its top-left tap. Each tap's C bits
// are Wd words (word j of pixel q at plane[j * a.plane + q]) of which the last holds C - 64 (Wd - 1) bits (the
// bits past C are zero); they are streamed into the destination through one word of carry, each word written
// once. The reference form of gather_row, for a single pixel (the zero-activation correction).
inline void gather_bits(const ConvArgs& a, const uint64_t* plane, int64_t top_left, uint64_t* dst) {
  const int64_t taps = a.k * a.k, Wd = a.Wd;
  const uint64_t* src = plane + top_left;
  const int tail = (int)(a.C - 64 * (Wd - 1));  // 1..64
  uint64_t acc = 0;
  int fill = 0;  // bits held in acc, 0..63
  for (int64_t t = 0; t < taps; ++t) {
    const uint64_t* p = src + a.tapoff[t];
    for (int64_t j = 0; j < Wd; ++j) {
      const uint64_t v = p[j * a.plane];
      const int nb = j + 1 < Wd ? 64 : tail;
      acc |= v << fill;
      if (fill + nb >= 64) {
        *dst++ = acc;
        acc = fill ? v >> (64 - fill) : 0;
        fill += nb - 64;
      } else {
        fill += nb;
      }
    }
  }
  if (fill) *dst = acc;
}

// The im2col of output row (n, oh), word-major: word w of the row's pixel ow at dense[w * ld + ow]. Each tap's
// input word is ORed in at its bit offset for all the row's pixels at once (loops over contiguous pixels at
// stride 1, which the compiler vectorizes): a few vector operations per tap for a whole register of pixels,
// where the per-pixel form costs several scalar ones per tap and pixel.
void gather_row(const ConvArgs& a, int64_t n, int64_t oh, int64_t ld, uint64_t* __restrict dense) {
  const int64_t taps = a.k * a.k, Wd = a.Wd, OW = a.OW, st = a.stride;
  const int tail = (int)(a.C - 64 * (Wd - 1));  // 1..64
  memset(dense, 0, a.Kw * ld * sizeof(uint64_t));
  const uint64_t* row0 = a.s + (n * a.Hp + oh * st) * a.Wp;
  for (int64_t t = 0; t < taps; ++t) {
    for (int64_t j = 0; j < Wd; ++j) {
      const uint64_t* __restrict src = row0 + a.tapoff[t] + j * a.plane;
      const int64_t bit = t * a.C + 64 * j;
      const int sh = (int)(bit & 63), nb = j + 1 < Wd ? 64 : tail;
      uint64_t* __restrict d0 = dense + (bit >> 6) * ld;
      if (st == 1) {
        for (int64_t ow = 0; ow < OW; ++ow) d0[ow] |= src[ow] << sh;
      } else {
        for (int64_t ow = 0; ow < OW; ++ow) d0[ow] |= src[ow * st] << sh;
      }
      if (sh + nb > 64) {  // the rest of the word spills into the next one
        uint64_t* __restrict d1 = d0 + ld;
        const int rsh = 64 - sh;
        if (st == 1) {
          for (int64_t ow = 0; ow < OW; ++ow) d1[ow] |= src[ow] >> rsh;
        } else {
          for (int64_t ow = 0; ow < OW; ++ow) d1[ow] |= src[ow * st] >> rsh;
        }
      }
    }
  }
}

// Words [j0, j1) of the inner loop: acc += popcount((s ^ t) [& v]) of NP pixels x R * LANES output channels
// (AND_: popcount(s & t), for the zero-activation correction); word j of pixel p at rows[p][j * ld]. R may
// exceed a block's RFULL vectors (a tile of consecutive blocks, bstride = Kw * OB_CHS words apart).
template <int NP, int R, bool WMASK, bool AND_, typename Acc>
BNAS_HOT void accumulate(const uint64_t* const* rows, int64_t ld, int64_t j0, int64_t j1, int64_t bstride,
                         const uint64_t* wb, const uint64_t* wm, Acc (&acc)[NP][R]) {
  for (int64_t j = j0; j < j1; ++j) {
    for (int p = 0; p < NP; ++p) {
      const V s = Simd::bcast(rows[p][j * ld]);
      for (int r = 0; r < R; ++r) {
        const int64_t off = (r / RFULL) * bstride + j * OB_CHS + (r % RFULL) * LANES;
        const V wv = Simd::load(wb + off);
        V x = AND_ ? Simd::and_(s, wv) : Simd::xor_(s, wv);
        if (WMASK) x = Simd::and_(x, Simd::load(wm + off));
        acc[p][r] = Simd::acc_add(acc[p][r], x);
      }
    }
  }
}

// The inner loop over all Kw words, into 64-bit lane counts.
template <int NP, int R, bool WMASK, bool AND_ = false>
BNAS_HOT void gemm_regs(const uint64_t* const* rows, int64_t ld, int64_t Kw, const uint64_t* wb, const uint64_t* wm,
                      V (&total)[NP][R]) {
  for (int p = 0; p < NP; ++p)
    for (int r = 0; r < R; ++r) total[p][r] = Simd::zero();
  if constexpr (Simd::FLUSH >= (1 << 30)) {  // the accumulator is the 64-bit count (A is V): no flushes
    accumulate<NP, R, WMASK, AND_>(rows, ld, 0, Kw, Kw * OB_CHS, wb, wm, total);
    return;
  }
  for (int64_t j0 = 0; j0 < Kw; j0 += Simd::FLUSH) {
    A acc[NP][R];
    for (int p = 0; p < NP; ++p)
      for (int r = 0; r < R; ++r) acc[p][r] = Simd::acc_zero();
    accumulate<NP, R, WMASK, AND_>(rows, ld, j0, imin(Kw, j0 + Simd::FLUSH), Kw * OB_CHS, wb, wm, acc);
    for (int p = 0; p < NP; ++p)
      for (int r = 0; r < R; ++r) total[p][r] = Simd::acc_flush(total[p][r], acc[p][r]);
  }
}

// The same, stored as NP rows of 16 int32 counts (the lanes past R * LANES zero).
template <int NP, int R, bool WMASK, bool AND_ = false>
BNAS_HOT void gemm_block(const uint64_t* const* rows, int64_t ld, int64_t Kw, const uint64_t* wb, const uint64_t* wm,
                       int32_t* cnt) {
  V total[NP][R];
  gemm_regs<NP, R, WMASK, AND_>(rows, ld, Kw, wb, wm, total);
  for (int p = 0; p < NP; ++p) {
    for (int r = 0; r < R; ++r) Simd::store32(cnt + p * OB_CHS + r * LANES, total[p][r]);
    for (int c = R * LANES; c < OB_CHS; ++c) cnt[p * OB_CHS + c] = 0;
  }
}

// Per-thread state of one output row: each pixel's word 0 (in the packed input, or in `dense`) and the stride
// between its words, its padded taps, whether it sees an exact zero; scratch for the zero bits of such a pixel.
struct Row {
  const uint64_t** ptr;
  int64_t ld;
  uint32_t* oob;
  uint8_t* zf;
  uint64_t* dense;
  int64_t dense_ld;  // pixels per word of `dense` (OW rounded up to whole cache lines)
  uint64_t* zbits;
};

// Set up output row (n, oh).
void build_row(const ConvArgs& a, int64_t n, int64_t oh, Row& r) {
  const int64_t taps = a.k * a.k;
  if (a.dense) gather_row(a, n, oh, r.dense_ld, r.dense);
  r.ld = a.dense ? r.dense_ld : a.plane;
  for (int64_t ow = 0; ow < a.OW; ++ow) {
    const int64_t top_left = (n * a.Hp + oh * a.stride) * a.Wp + ow * a.stride;  // a pixel index
    r.oob[ow] = a.rowoob[oh] | a.coloob[ow];
    bool zf = false;
    if (a.any_zero)
      for (int64_t t = 0; t < taps; ++t) zf |= a.zflag[top_left + a.tapoff[t]] != 0;
    r.zf[ow] = zf;
    r.ptr[ow] = a.dense ? r.dense + ow : a.s + top_left;
  }
}

// The table entries (2 T - V) of the padded taps in mask m, added to the NCH sums at channel c0.
template <int NCH = OB_CHS>
BNAS_HOT void add_padded_taps(const ConvArgs& a, uint32_t m, int64_t c0, int32_t* tot) {
  for (; m; m &= m - 1) {
    const int32_t* corr = a.tapcorr + (int64_t)__builtin_ctz(m) * a.OB * OB_CHS + c0;
    for (int c = 0; c < NCH; ++c) tot[c] += corr[c];
  }
}

// The output of one pixel's nc channels of block ob from its disagreement counts (FULL: nc == 16; the loops
// run over all 16 lanes, whose per-channel tables are padded, so that they vectorize).
template <int R, bool FULL>
inline void epilogue(const ConvArgs& a, const Row& row, const int32_t* cnt, int64_t ob, int nc, int64_t n,
                     int64_t oh, int64_t ow) {
  const int64_t c0 = ob * OB_CHS;
  const int len = FULL ? OB_CHS : nc;
  int32_t tot[OB_CHS];
  const int32_t* base = a.base + c0;
  for (int c = 0; c < OB_CHS; ++c) tot[c] = base[c] - 2 * cnt[c];
  add_padded_taps(a, row.oob[ow], c0, tot);
  if (row.zf[ow]) {  // exact zero activations in the receptive field: 2 T - V over their bits
    const int64_t top_left = (n * a.Hp + oh * a.stride) * a.Wp + ow * a.stride;
    gather_bits(a, a.z, top_left, row.zbits);  // (the padded taps' zero bits are 0: they are in the table)
    const uint64_t* zrow = row.zbits;
    int32_t t[OB_CHS], v[OB_CHS];
    gemm_block<1, R, false, true>(&zrow, 1, a.Kw, a.wbits + ob * a.Kw * OB_CHS, nullptr, t);
    if (a.wmask) {
      gemm_block<1, R, false, true>(&zrow, 1, a.Kw, a.wmask + ob * a.Kw * OB_CHS, nullptr, v);
    } else {
      int32_t z = 0;
      for (int64_t j = 0; j < a.Kw; ++j) z += Simd::popcount64(zrow[j]);
      for (int c = 0; c < OB_CHS; ++c) v[c] = z;
    }
    for (int c = 0; c < OB_CHS; ++c) tot[c] += 2 * t[c] - v[c];
  }
  const float* alpha = a.alpha + c0;
  float val[OB_CHS];
  if (a.relu && a.alpha_nonneg) {  // relu(alpha * t) = alpha * max(t, 0) for alpha >= 0: on the integers
    for (int c = 0; c < OB_CHS; ++c) tot[c] = tot[c] > 0 ? tot[c] : 0;
    for (int c = 0; c < OB_CHS; ++c) val[c] = alpha[c] * (float)tot[c];
  } else {
    for (int c = 0; c < OB_CHS; ++c) val[c] = alpha[c] * (float)tot[c];
    if (a.relu)
      for (int c = 0; c < OB_CHS; ++c) val[c] = val[c] > 0.0f ? val[c] : 0.0f;
  }
  const int64_t opix = (n * a.OH + oh) * a.OW + ow;
  float* out = a.out + opix * a.ldo + c0;
  if (a.res) {
    const float* res = a.res + opix * a.ldr + c0;
    for (int c = 0; c < len; ++c) out[c] = val[c] + res[c];
  } else {
    for (int c = 0; c < len; ++c) out[c] = val[c];
  }
}

// Blocks whose ReLU (if any) acts on the integers (alpha >= 0), straight from the registers: each pixel's
// outputs are alpha * [max](base' - 2 cnt, 0) [+ res], where base' adds to base the table entries of the
// pixel's padded taps; only a pixel that sees an exact zero activation takes the general epilogue. R vectors:
// one block (R <= RFULL) or a tile of consecutive blocks from ob (a narrow layer's output channels at once: one
// pass over the pixel's words instead of one per block). The last vectors of a partial block compute whole
// vectors (the per-channel tables are padded to 16) and store nc values in all; WHOLE: nc == R * LANES.
template <int NP, int R, bool WMASK, bool RELU, bool RES, bool WHOLE>
BNAS_HOT void pixels_full(const ConvArgs& a, const Row& row, int64_t ob, int nc, int64_t n, int64_t oh, int64_t ow) {
  constexpr int RB = R < RFULL ? R : RFULL;                               // vectors of one block
  constexpr int NCH = (R * LANES + OB_CHS - 1) / OB_CHS * OB_CHS;         // channels of the tile's blocks
  V total[NP][R];
  gemm_regs<NP, R, WMASK>(row.ptr + ow, row.ld, a.Kw, a.wbits + ob * a.Kw * OB_CHS,
                          WMASK ? a.wmask + ob * a.Kw * OB_CHS : nullptr, total);
  const int64_t c0 = ob * OB_CHS, opix0 = (n * a.OH + oh) * a.OW + ow;
  for (int p = 0; p < NP; ++p) {
    if (row.zf[ow + p]) {
      for (int b = 0; b * OB_CHS < nc; ++b) {  // block by block
        int32_t cnt[OB_CHS] = {0};
        for (int r = b * RFULL; r < R && r < (b + 1) * RFULL; ++r)
          Simd::store32(cnt + (r - b * RFULL) * LANES, total[p][r]);
        const int nb = (int)imin(OB_CHS, nc - b * OB_CHS);
        if (nb == OB_CHS) epilogue<RB, true>(a, row, cnt, ob + b, nb, n, oh, ow + p);
        else epilogue<RB, false>(a, row, cnt, ob + b, nb, n, oh, ow + p);
      }
      continue;
    }
    const int32_t* base = a.base + c0;
    int32_t border[NCH];
    if (row.oob[ow + p]) {
      for (int c = 0; c < NCH; ++c) border[c] = base[c];
      add_padded_taps<NCH>(a, row.oob[ow + p], c0, border);
      base = border;
    }
    float* out = a.out + (opix0 + p) * a.ldo + c0;
    const float* res = RES ? a.res + (opix0 + p) * a.ldr + c0 : nullptr;
    for (int r = 0; r < R && (WHOLE || r * LANES < nc); ++r) {
      const int len = WHOLE ? LANES : nc - r * LANES;  // values of this vector to store (more than LANES: all)
      if (len >= LANES) {
        Simd::template out<RELU, RES>(total[p][r], base + r * LANES, a.alpha + c0 + r * LANES,
                                      RES ? res + r * LANES : nullptr, out + r * LANES);
      } else {  // through a local vector: the row past nc holds other channels, or ends the buffer
        float tmp[LANES], rtmp[LANES] = {0};
        if (RES) memcpy(rtmp, res + r * LANES, len * sizeof(float));
        Simd::template out<RELU, RES>(total[p][r], base + r * LANES, a.alpha + c0 + r * LANES, rtmp, tmp);
        memcpy(out + r * LANES, tmp, len * sizeof(float));
      }
    }
  }
}

// A block whose ReLU follows scales of either sign: the counts through memory and the general epilogue.
template <int NP, int R, bool WMASK>
inline void pixels(const ConvArgs& a, const Row& row, int64_t ob, int nc, int64_t n, int64_t oh, int64_t ow) {
  int32_t cnt[NP * OB_CHS];
  gemm_block<NP, R, WMASK>(row.ptr + ow, row.ld, a.Kw, a.wbits + ob * a.Kw * OB_CHS,
                           WMASK ? a.wmask + ob * a.Kw * OB_CHS : nullptr, cnt);
  for (int p = 0; p < NP; ++p) {
    if (nc == OB_CHS) epilogue<R, true>(a, row, cnt + p * OB_CHS, ob, nc, n, oh, ow + p);
    else epilogue<R, false>(a, row, cnt + p * OB_CHS, ob, nc, n, oh, ow + p);
  }
}

template <int R, bool WMASK, bool RELU, bool RES>
void block_row_full(const ConvArgs& a, const Row& row, int64_t ob, int nc, int64_t n, int64_t oh) {
  constexpr int NP = R * Simd::NP <= 24 ? Simd::NP : 2;  // pixels per register block: at most 24 accumulators
  int64_t ow = 0;
  if (nc == R * LANES) {
    for (; ow + NP <= a.OW; ow += NP) pixels_full<NP, R, WMASK, RELU, RES, true>(a, row, ob, nc, n, oh, ow);
    for (; ow < a.OW; ++ow) pixels_full<1, R, WMASK, RELU, RES, true>(a, row, ob, nc, n, oh, ow);
    return;
  }
  for (; ow + NP <= a.OW; ow += NP) pixels_full<NP, R, WMASK, RELU, RES, false>(a, row, ob, nc, n, oh, ow);
  for (; ow < a.OW; ++ow) pixels_full<1, R, WMASK, RELU, RES, false>(a, row, ob, nc, n, oh, ow);
}

// block_row_full for the case at hand: no ReLU, or a ReLU on the integers (every alpha >= 0).
template <int R, bool WMASK>
void block_row_full_any(const ConvArgs& a, const Row& row, int64_t ob, int nc, int64_t n, int64_t oh) {
  if (a.res) {
    if (a.relu) block_row_full<R, WMASK, true, true>(a, row, ob, nc, n, oh);
    else block_row_full<R, WMASK, false, true>(a, row, ob, nc, n, oh);
  } else {
    if (a.relu) block_row_full<R, WMASK, true, false>(a, row, ob, nc, n, oh);
    else block_row_full<R, WMASK, false, false>(a, row, ob, nc, n, oh);
  }
}

template <int R, bool WMASK>
void block_row(const ConvArgs& a, const Row& row, int64_t ob, int nc, int64_t n, int64_t oh) {
  if (!a.relu || a.alpha_nonneg) return block_row_full_any<R, WMASK>(a, row, ob, nc, n, oh);
  int64_t ow = 0;
  for (; ow + Simd::NP <= a.OW; ow += Simd::NP) pixels<Simd::NP, R, WMASK>(a, row, ob, nc, n, oh, ow);
  for (; ow < a.OW; ++ow) pixels<1, R, WMASK>(a, row, ob, nc, n, oh, ow);
}

template <int R>
void block_row_r(const ConvArgs& a, const Row& row, int64_t ob, int nc, int64_t n, int64_t oh) {
  if (a.wmask) block_row<R, true>(a, row, ob, nc, n, oh);
  else block_row<R, false>(a, row, ob, nc, n, oh);
}

// The vectors a block of nc output channels needs (a partial last block computes fewer).
void block_any(const ConvArgs& a, const Row& row, int64_t ob, int64_t n, int64_t oh) {
  const int nc = (int)imin(OB_CHS, a.Cout - ob * OB_CHS);
  const int r = (nc + LANES - 1) / LANES;
  if (r >= RFULL) return block_row_r<RFULL>(a, row, ob, nc, n, oh);
  if (RFULL > 1 && r == 1) return block_row_r<1>(a, row, ob, nc, n, oh);
  if (RFULL > 2 && r == 2) return block_row_r<(RFULL > 2 ? 2 : 1)>(a, row, ob, nc, n, oh);
  if (RFULL > 3 && r == 3) return block_row_r<(RFULL > 3 ? 3 : 1)>(a, row, ob, nc, n, oh);
  return block_row_r<RFULL>(a, row, ob, nc, n, oh);
}

// A tile of R vectors from block ob (nc channels), its ReLU on the integers.
template <int R>
void tile_r(const ConvArgs& a, const Row& row, int64_t ob, int nc, int64_t n, int64_t oh) {
  if (a.wmask) block_row_full_any<R, true>(a, row, ob, nc, n, oh);
  else block_row_full_any<R, false>(a, row, ob, nc, n, oh);
}

// Blocks [ob, ob_end) of one output row. With 8-word vectors and the ReLU on the integers, up to four blocks
// at a time (33 to 64 output channels: 5 to 8 vectors, 4 or 2 pixels in registers) make one register tile: one
// pass over each pixel's words and one epilogue per pixel instead of one per block of 16 channels. The rest
// block by block.
void blocks_row(const ConvArgs& a, const Row& row, int64_t ob, int64_t ob_end, int64_t n, int64_t oh) {
  const bool tiles = LANES == 8 && (!a.relu || a.alpha_nonneg);  // the register epilogue applies
  while (ob < ob_end) {
    const int nc = (int)imin(imin(4, ob_end - ob) * OB_CHS, a.Cout - ob * OB_CHS);
    if (tiles && nc > 32) {
      constexpr bool T = LANES == 8;  // (the other instruction sets never get here: their instances are dummies)
      switch ((nc + 7) / 8) {
        case 5: tile_r<T ? 5 : 1>(a, row, ob, nc, n, oh); break;
        case 6: tile_r<T ? 6 : 1>(a, row, ob, nc, n, oh); break;
        case 7: tile_r<T ? 7 : 1>(a, row, ob, nc, n, oh); break;
        default: tile_r<T ? 8 : 1>(a, row, ob, nc, n, oh); break;
      }
      ob += (nc + OB_CHS - 1) / OB_CHS;
      continue;
    }
    block_any(a, row, ob, n, oh);
    ++ob;
  }
}

// The cache lines of [begin, end) into L2 (RW: for writing).
template <int RW>
inline void prefetch_lines(const float* begin, const float* end) {
  for (uintptr_t p = (uintptr_t)begin & ~(uintptr_t)63; p < (uintptr_t)end; p += 64)
    __builtin_prefetch((const void*)p, RW, 2);
}

// The output and residual cache lines of channels [c0, c1) of output row `line` (n * OH + oh) into L2, a row
// ahead of the epilogue that writes and reads them: at batch sizes above 1 these tensors are far larger than L2,
// and the epilogue's accesses (a few lines per pixel, a pixel's row of channels apart) are not streams that the
// hardware prefetchers follow.
inline void prefetch_outputs(const ConvArgs& a, int64_t line, int64_t c0, int64_t c1) {
  for (int64_t opix = line * a.OW; opix < (line + 1) * a.OW; ++opix) {
    prefetch_lines<1>(a.out + opix * a.ldo + c0, a.out + opix * a.ldo + c1);
    if (a.res) prefetch_lines<0>(a.res + opix * a.ldr + c0, a.res + opix * a.ldr + c1);
  }
}

void conv_tasks(const ConvArgs& a, int64_t chunks, int64_t begin, int64_t end) {
  Row row;
  row.dense_ld = (a.OW + 7) & ~(int64_t)7;
  const int64_t dense_words = a.dense ? a.Kw * row.dense_ld : 0;
  char* mem = (char*)malloc((dense_words + a.Kw) * sizeof(uint64_t) + a.OW * (sizeof(void*) + sizeof(uint32_t) + 1));
  row.dense = (uint64_t*)mem;
  row.zbits = row.dense + dense_words;
  row.ptr = (const uint64_t**)(row.zbits + a.Kw);
  row.oob = (uint32_t*)(row.ptr + a.OW);
  row.zf = (uint8_t*)(row.oob + a.OW);
  const int64_t per = (a.OB + chunks - 1) / chunks;
  int64_t built = -1;
  for (int64_t t = begin; t < end; ++t) {
    const int64_t line = t / chunks, chunk = t % chunks;  // line = n * OH + oh
    const int64_t n = line / a.OH, oh = line % a.OH;
    if (line != built) {
      build_row(a, n, oh, row);
      built = line;
    }
    const int64_t ob0 = chunk * per, ob1 = imin(a.OB, (chunk + 1) * per);
    if (t + chunks < end)  // the next row's task for these channels is this thread's
      prefetch_outputs(a, line + 1, ob0 * OB_CHS, imin(a.Cout, ob1 * OB_CHS));
    blocks_row(a, row, ob0, ob1, n, oh);
  }
  free(mem);
}

// Binary multiply-adds per second of the inner loop on operands in L1: a full block of output channels,
// NP pixels, Kw = 36 (a 3x3 conv over 256 channels), for `seconds` of this thread's CPU time.
double peak_rate(double seconds) {
  enum { KW = 36 };
  static uint64_t w[KW * OB_CHS], x[Simd::NP][KW];
  uint64_t seed = 0x9E3779B97F4A7C15ull;
  for (int i = 0; i < KW * OB_CHS; ++i) w[i] = seed = seed * 6364136223846793005ull + 1442695040888963407ull;
  for (int p = 0; p < Simd::NP; ++p)
    for (int j = 0; j < KW; ++j) x[p][j] = seed = seed * 6364136223846793005ull + 1442695040888963407ull;
  const uint64_t* rows[Simd::NP];
  for (int p = 0; p < Simd::NP; ++p) rows[p] = x[p];
  int32_t cnt[Simd::NP * OB_CHS];
  volatile int64_t sink = 0;
  timespec t0, t1;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
  double elapsed = 0.0, calls = 0.0;
  while (elapsed < seconds) {
    for (int i = 0; i < 1000; ++i) {
      gemm_block<Simd::NP, RFULL, false>(rows, 1, KW, w, nullptr, cnt);
      // Every pixel's counts are used and feed the next call's operands: otherwise the compiler drops the
      // pixels whose counts nothing reads, and the loop it times does a fraction of the work it counts.
      for (int p = 0; p < Simd::NP; ++p) {
        sink = sink + cnt[p * OB_CHS + (i & 15)];
        x[p][i % KW] ^= (uint64_t)cnt[p * OB_CHS];
      }
    }
    calls += 1000.0;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
    elapsed = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  }
  return calls * (double)Simd::NP * (double)OB_CHS * (double)KW * 64.0 / elapsed;
}

#undef BNAS_HOT

}  // namespace
