// bnas_zoo::run_program: a deployed network's whole forward pass in one op, with no Python between the layers.
// The instruction set, the program builder and the plain-PyTorch interpreter that this one is tested against
// are in bnas_zoo/program.py; the opcodes and operand orders here follow it.
//
// Buffers are channels-last float32 tensors; a slice (buffer, first channel, channels) is addressed by raw
// pointers with the buffer's channel count as the row stride, so that nodes write into their place in the
// concatenated cell output and edges add into their node in place. The binary convolutions call the kernels
// directly (binary_conv_raw); the float parts use the same ATen ops as the Python interpreter (oneDNN
// convolutions and matrix products, pooling), so the two compute the same values.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <chrono>
#include <cstring>
#include <mutex>
#include <vector>

#include "ops.h"

namespace bnas_kernels {
namespace {

constexpr int64_t kVersion = 1;
enum FloatMode : int64_t { FLOAT32 = 0, BF16, BF16_EMULATED };
enum Op : int64_t { ALLOC = 1, ZERO, COPY, ADD, AFFINE, CONV, BIN, SIGNCONV, POOL, SHORTCUT };
constexpr int64_t kOperands[] = {0, 4, 3, 5, 5, 4, 10, 22, 18, 7, 9};

// Memory kept from one call of a program to the next: its buffers, and the binary convolutions' packed input
// planes. The C library returns large freed blocks to the system and faults them in again page by page when they
// are next taken, so a network taking all its buffers afresh at every call spends a growing share of large
// batches in the kernel (bnas_a at batch 128, 1 thread: 124,000 page faults and 290 of 1,030 ms per call). A call
// reuses a kept buffer when it needs one of the same shape; the result it returns is the caller's, not kept.
struct Workspace {
  std::vector<int64_t> input;       // the input sizes of the call that left these (another shape: all dropped)
  std::vector<at::Tensor> buffers;  // by buffer index; undefined where the program allocates none
  at::Tensor planes;                // binary_conv_raw's packed planes (int64)
  bool kept = false;                // the program's kept workspace (not a call's own)

  int64_t bytes() const {
    int64_t n = planes.defined() ? planes.nbytes() : 0;
    for (const at::Tensor& t : buffers) n += t.defined() ? (int64_t)t.nbytes() : 0;
    return n;
  }
};

// The kept workspace of each live program, by its code tensor's storage. The workspace of a program whose code
// tensor has been freed (its network deleted) is freed at the next call of any program, or at once by
// release_workspace (deploy.py calls it when the network is collected). A call that finds its program's
// workspace in use by another thread works in memory of its own.
class Workspaces {
 public:
  static Workspaces& get() {
    static Workspaces* w = new Workspaces();  // never destroyed: calls may come during interpreter shutdown
    return *w;
  }

  Workspace take(const at::Tensor& code) {
    std::vector<Workspace> freed;  // (declared before the lock: freed after it is released)
    std::lock_guard<std::mutex> lock(mutex_);
    prune(freed);
    Entry* e = find(code);
    if (!e) {
      entries_.push_back(Entry{code.storage().getWeakStorageImpl(), Workspace(), false, false});
      e = &entries_.back();
    }
    if (e->busy) return Workspace();
    e->busy = true;
    Workspace ws = std::move(e->ws);
    ws.kept = true;
    return ws;
  }

  void give_back(const at::Tensor& code, Workspace ws) {
    if (!ws.kept) return;  // (a call's own: freed)
    std::lock_guard<std::mutex> lock(mutex_);
    Entry* e = find(code);
    if (!e || !e->busy) return;
    if (!e->released) e->ws = std::move(ws);
    e->busy = e->released = false;
  }

  // Free what `code`'s program keeps (at the end of the call that is using it, if one is).
  void release(const at::Tensor& code) {
    std::vector<Workspace> freed;  // (declared before the lock: freed after it is released)
    std::lock_guard<std::mutex> lock(mutex_);
    if (Entry* e = find(code)) {
      freed.push_back(std::move(e->ws));
      e->ws = Workspace();
      e->released = e->busy;
    }
    prune(freed);
  }

  // Bytes kept for `code`'s program (0 while a call is using them).
  int64_t bytes(const at::Tensor& code) {
    std::lock_guard<std::mutex> lock(mutex_);
    const Entry* e = find(code);
    return e ? e->ws.bytes() : 0;
  }

 private:
  struct Entry {
    c10::weak_intrusive_ptr<c10::StorageImpl> code;
    Workspace ws;
    bool busy, released;
  };

  // The entry of `code`'s program, or nullptr (one per program: an entry's weak pointer keeps its storage's
  // address from being reused while the entry lives).
  Entry* find(const at::Tensor& code) {
    for (Entry& e : entries_)
      if (e.code._unsafe_get_target() == code.storage().unsafeGetStorageImpl()) return &e;
    return nullptr;
  }

  // Drop the entries of freed programs, their workspaces moved to `freed` (to be freed outside the lock).
  void prune(std::vector<Workspace>& freed) {
    for (size_t i = 0; i < entries_.size();)
      if (entries_[i].code.expired() && !entries_[i].busy) {
        freed.push_back(std::move(entries_[i].ws));
        entries_[i] = std::move(entries_.back());
        entries_.pop_back();
      } else {
        ++i;
      }
  }

  std::mutex mutex_;
  std::vector<Entry> entries_;
};

// A kept buffer of exactly these sizes that nothing else holds, or a new one.
at::Tensor reuse_or_empty(at::Tensor kept, at::IntArrayRef sizes, const at::TensorOptions& opts) {
  if (kept.defined() && kept.sizes() == sizes && kept.use_count() == 1 && kept.storage().use_count() == 1 &&
      kept.is_contiguous(at::MemoryFormat::ChannelsLast))
    return kept;
  return at::empty(sizes, opts, at::MemoryFormat::ChannelsLast);
}

struct Buffers {
  std::vector<at::Tensor> t;

  const at::Tensor& get(int64_t b) const {
    TORCH_CHECK(b >= 0 && b < (int64_t)t.size() && t[b].defined(), "run_program: buffer ", b, " is not set");
    return t[b];
  }
  int64_t ld(int64_t b) const { return get(b).size(1); }
  float* ptr(int64_t b, int64_t off, int64_t ch) const {
    const at::Tensor& x = get(b);
    TORCH_CHECK(off >= 0 && ch >= 0 && off + ch <= x.size(1), "run_program: slice out of buffer ", b);
    return x.data_ptr<float>() + off;
  }
  int64_t pixels(int64_t b) const { return get(b).numel() / std::max<int64_t>(1, get(b).size(1)); }
  at::Tensor view(int64_t b, int64_t off, int64_t ch) const { return get(b).narrow(1, off, ch); }
};

const at::Tensor& param(at::TensorList params, int64_t i) {
  TORCH_CHECK(i >= 0 && i < (int64_t)params.size(), "run_program: parameter index ", i, " out of range");
  return params[i];
}

template <typename T>
const T* param_ptr(at::TensorList params, int64_t i) {
  return i < 0 ? nullptr : param(params, i).data_ptr<T>();
}

// dst[p * ldd + c] = f(src[p * lds + c]) over `pixels` rows of `ch` channels
template <typename F>
void rows(int64_t pixels, int64_t ch, F&& f) {
  at::parallel_for(0, pixels, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, ch)),
                   [&](int64_t b, int64_t e) { for (int64_t p = b; p < e; ++p) f(p); });
}

at::Tensor with_zero_channels(const at::Tensor& x, int64_t total, int64_t lo) {
  if (lo == 0 && x.size(1) == total) return x;
  return at::constant_pad_nd(x, {0, 0, 0, 0, lo, total - lo - x.size(1)});
}

at::Tensor float_conv(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b, int64_t stride,
                      int64_t pad, int64_t dil, int64_t groups) {
  return at::mkldnn_convolution(x.contiguous(at::MemoryFormat::ChannelsLast), w, b, {pad, pad}, {stride, stride},
                                {dil, dil}, groups);
}

// fn(x, w, b) in the program's float precision (program.py's in_precision): float32 where the weight is; with
// bfloat16 weights natively or emulated; the result as float32.
template <typename F>
at::Tensor in_precision(F&& fn, const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                        int64_t mode) {
  if (w.scalar_type() != at::kBFloat16) return fn(x, w, b);
  if (mode == BF16) return fn(x.to(at::kBFloat16), w, b).to(at::kFloat);
  const c10::optional<at::Tensor> bf = b.has_value() ? c10::optional<at::Tensor>(b->to(at::kFloat)) : c10::nullopt;
  return fn(x.to(at::kBFloat16).to(at::kFloat), w.to(at::kFloat), bf).to(at::kBFloat16).to(at::kFloat);
}

// patches (M, K) x weight (N, K)^T + bias: oneDNN's matrix product (mkldnn::_linear_pointwise, as program.py's
// shortcut_2x2 calls it) where torch has oneDNN, else linear.
at::Tensor matmul_bias(const at::Tensor& patches, const at::Tensor& w, const c10::optional<at::Tensor>& b) {
  if (!at::hasMKLDNN()) return at::linear(patches, w, b);
  static const c10::OperatorHandle op = c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
  std::vector<c10::IValue> stack{patches, w, b, std::string("none"), c10::List<c10::optional<at::Scalar>>(),
                                 c10::optional<std::string>(std::string())};
  op.callBoxed(&stack);
  return stack[0].toTensor();
}

at::Tensor shortcut_2x2(const at::Tensor& xin, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                        int64_t groups) {
  if (groups != 1) return float_conv(xin, w, b, 2, 0, 1, groups);
  const int64_t n = xin.size(0), c = xin.size(1), h = xin.size(2) / 2, wd = xin.size(3) / 2;
  const at::Tensor patches = xin.narrow(2, 0, 2 * h).narrow(3, 0, 2 * wd).permute({0, 2, 3, 1})
                                 .reshape({n, h, 2, wd, 2, c}).permute({0, 1, 3, 2, 4, 5});
  return matmul_bias(patches.reshape({n * h * wd, 4 * c}), w, b).view({n, h, wd, -1}).permute({0, 3, 1, 2});
}

// out slice = y [+ res slice], y a (N, ch, H, W) tensor of the slice's shape
void store(const Buffers& B, int64_t out, int64_t off, const at::Tensor& y_in, int64_t res, int64_t roff) {
  const at::Tensor y = y_in.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t ch = y.size(1), n = y.numel() / std::max<int64_t>(1, ch);
  TORCH_CHECK(n == B.pixels(out), "run_program: result shape does not fit buffer ", out);
  const float* py = y.data_ptr<float>();
  float* po = B.ptr(out, off, ch);
  const int64_t ldo = B.ld(out);
  if (res < 0) {
    rows(n, ch, [&](int64_t p) { std::memcpy(po + p * ldo, py + p * ch, ch * sizeof(float)); });
    return;
  }
  const float* pr = B.ptr(res, roff, ch);
  const int64_t ldr = B.ld(res);
  TORCH_CHECK(B.pixels(res) == n, "run_program: residual shape");
  rows(n, ch, [&](int64_t p) {
    for (int64_t c = 0; c < ch; ++c) po[p * ldo + c] = py[p * ch + c] + pr[p * ldr + c];
  });
}

}  // namespace

// The program on x; `times` (if given) receives each instruction's seconds, in program order.
at::Tensor run_program_timed(const at::Tensor& x, at::TensorList params, at::IntArrayRef code, int64_t out_channels,
                             std::vector<double>* times, Workspace& ws) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && x.device().is_cpu(),
              "run_program: expected a float32 (N, C, H, W) CPU tensor");
  TORCH_CHECK(code.size() >= 4 && code[0] == kVersion && code[3] >= FLOAT32 && code[3] <= BF16_EMULATED,
              "run_program: not a program of version ", kVersion);
  const int64_t mode = code[3];
  Buffers B;
  B.t.resize(code[1]);
  if (!x.sizes().equals(ws.input)) {  // another shape: nothing kept fits (freed before this call allocates)
    ws.buffers.clear();
    ws.planes = at::Tensor();
    ws.input = x.sizes().vec();
  }
  ws.buffers.resize(code[1]);
  B.t[0] = x.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t N = x.size(0);
  const auto fopts = x.options();
  size_t i = 4;
  while (i < code.size()) {
    const int64_t op = code[i];
    TORCH_CHECK(op >= ALLOC && op <= SHORTCUT && i + kOperands[op] < code.size(), "run_program: bad code at ", i);
    const int64_t* a = code.data() + i + 1;
    i += 1 + kOperands[op];
    const auto start = times ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
    if (op == ALLOC || op == AFFINE || op == CONV || op == SHORTCUT)  // the instructions that make a buffer
      TORCH_CHECK(a[0] > 0 && a[0] < code[1], "run_program: buffer ", a[0], " out of range at ", i);
    switch (op) {
      case ALLOC: {
        const at::Tensor& like = B.get(a[2]);
        const int64_t s = a[3];
        const int64_t sizes[] = {N, a[1], (like.size(2) + s - 1) / s, (like.size(3) + s - 1) / s};
        B.t[a[0]] = reuse_or_empty(std::move(ws.buffers[a[0]]), sizes, fopts);
        ws.buffers[a[0]] = B.t[a[0]];
        break;
      }
      case ZERO: {
        float* p = B.ptr(a[0], a[1], a[2]);
        const int64_t ld = B.ld(a[0]), ch = a[2];
        rows(B.pixels(a[0]), ch, [&](int64_t q) { std::memset(p + q * ld, 0, ch * sizeof(float)); });
        break;
      }
      case COPY:
      case ADD: {
        const int64_t ch = a[2];
        float* d = B.ptr(a[0], a[1], ch);
        const float* s = B.ptr(a[3], a[4], ch);
        const int64_t ldd = B.ld(a[0]), lds = B.ld(a[3]);
        TORCH_CHECK(B.pixels(a[0]) == B.pixels(a[3]), "run_program: COPY/ADD shapes differ");
        if (op == COPY)
          rows(B.pixels(a[0]), ch, [&](int64_t q) { std::memcpy(d + q * ldd, s + q * lds, ch * sizeof(float)); });
        else
          rows(B.pixels(a[0]), ch, [&](int64_t q) {
            for (int64_t c = 0; c < ch; ++c) d[q * ldd + c] += s[q * lds + c];
          });
        break;
      }
      case AFFINE: {
        const at::Tensor& in = B.get(a[1]);
        const int64_t C = in.size(1);
        const float* sc = param_ptr<float>(params, a[2]);
        const float* sh = param_ptr<float>(params, a[3]);
        at::Tensor out = at::empty_like(in, at::MemoryFormat::ChannelsLast);
        const float* pi = in.data_ptr<float>();
        float* po = out.data_ptr<float>();
        rows(B.pixels(a[1]), C, [&](int64_t q) {
          for (int64_t c = 0; c < C; ++c) po[q * C + c] = pi[q * C + c] * sc[c] + sh[c];
        });
        B.t[a[0]] = out;
        break;
      }
      case CONV: {
        at::Tensor in = B.get(a[1]);
        if (a[8]) in = at::relu(in);
        const c10::optional<at::Tensor> bias = a[3] >= 0 ? c10::optional<at::Tensor>(param(params, a[3])) : c10::nullopt;
        const int64_t stride = a[4], pad = a[5], dil = a[6], groups = a[7];
        at::Tensor y = in_precision([&](const at::Tensor& x_, const at::Tensor& w_, const c10::optional<at::Tensor>& b_) {
          return float_conv(x_, w_, b_, stride, pad, dil, groups);
        }, in, param(params, a[2]), bias, mode);
        if (a[9]) at::relu_(y);  // (y is the conv's own new tensor)
        B.t[a[0]] = y.contiguous(at::MemoryFormat::ChannelsLast);
        break;
      }
      case BIN: {
        const int64_t out = a[0], off = a[1], res = a[2], roff = a[3], in = a[4], ioff = a[5], ich = a[6];
        const int64_t C = a[7], lo = a[8], cout = a[16], k = a[17], stride = a[18], pad = a[19], dil = a[20];
        const at::Tensor& xin = B.get(in);
        const int64_t H = xin.size(2), W = xin.size(3);
        const int64_t OH = (H + 2 * pad - dil * (k - 1) - 1) / stride + 1;
        const int64_t OW = (W + 2 * pad - dil * (k - 1) - 1) / stride + 1;
        const at::Tensor& ob = B.get(out);
        TORCH_CHECK(ob.size(2) == OH && ob.size(3) == OW && off + cout <= ob.size(1), "run_program: BIN output shape");
        TORCH_CHECK(lo >= 0 && lo + ich <= C && param(params, a[9]).numel() == C, "run_program: BIN input channels");
        const BinaryWeights w{reinterpret_cast<const uint64_t*>(param_ptr<int64_t>(params, a[11])),
                              reinterpret_cast<const uint64_t*>(param_ptr<int64_t>(params, a[12])),
                              param_ptr<int32_t>(params, a[13]), param_ptr<float>(params, a[14]),
                              param_ptr<int32_t>(params, a[15]), C, cout, k};
        const float* pr = nullptr;
        int64_t ldr = 0;
        if (res >= 0) {
          TORCH_CHECK(B.pixels(res) == N * OH * OW, "run_program: BIN residual shape");
          pr = B.ptr(res, roff, cout);
          ldr = B.ld(res);
        }
        binary_conv_raw(B.ptr(in, ioff, ich), B.ld(in), N, H, W, lo, lo + ich, param_ptr<float>(params, a[9]),
                        param_ptr<float>(params, a[10]), w, stride, pad, dil, a[21] != 0, pr, ldr,
                        B.ptr(out, off, cout), B.ld(out), nullptr, &ws.planes);
        break;
      }
      case SIGNCONV: {
        const int64_t out = a[0], off = a[1], res = a[2], roff = a[3], in = a[4], ioff = a[5], ich = a[6];
        const int64_t C = a[7], lo = a[8];
        const at::Tensor& xin = B.get(in);
        const float* sc = param_ptr<float>(params, a[9]);
        const float* sh = param_ptr<float>(params, a[10]);
        at::Tensor sgn = at::empty({N, C, xin.size(2), xin.size(3)}, fopts, at::MemoryFormat::ChannelsLast);
        const float* px = B.ptr(in, ioff, ich);
        const int64_t ldx = B.ld(in);
        float* ps = sgn.data_ptr<float>();
        rows(B.pixels(in), C, [&](int64_t q) {
          for (int64_t c = 0; c < C; ++c) {
            const float v = (c >= lo && c < lo + ich) ? px[q * ldx + c - lo] : 0.0f;
            const float y = v * sc[c] + sh[c];
            ps[q * C + c] = y != y ? y : (float)((y > 0.0f) - (y < 0.0f));
          }
        });
        const int64_t stride = a[13], pad = a[14], dil = a[15], groups = a[16];
        at::Tensor y = in_precision([&](const at::Tensor& x_, const at::Tensor& w_, const c10::optional<at::Tensor>& b_) {
          return float_conv(x_, w_, b_, stride, pad, dil, groups);
        }, sgn, param(params, a[11]), c10::nullopt, mode);
        if (a[17]) at::relu_(y);
        store(B, out, off, y, res, roff);
        break;
      }
      case POOL: {
        const at::Tensor xin = B.view(a[2], a[3], a[4]);
        const at::Tensor y = a[5] == 0 ? at::max_pool2d(xin, {3, 3}, {a[6], a[6]}, {1, 1})
                                       : at::avg_pool2d(xin, {3, 3}, {a[6], a[6]}, {1, 1}, false, false);
        store(B, a[0], a[1], y, -1, 0);
        break;
      }
      case SHORTCUT: {
        const at::Tensor xin = with_zero_channels(B.view(a[1], a[2], a[3]), a[4], a[5]);
        const int64_t groups = a[8];
        const at::Tensor y = in_precision([&](const at::Tensor& x_, const at::Tensor& w_, const c10::optional<at::Tensor>& b_) {
          return shortcut_2x2(x_, w_, b_, groups);
        }, xin, param(params, a[6]), c10::optional<at::Tensor>(param(params, a[7])), mode);
        B.t[a[0]] = y.contiguous(at::MemoryFormat::ChannelsLast);
        break;
      }
    }
    if (times) times->push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  const at::Tensor& result = B.get(code[2]);
  TORCH_CHECK(result.size(1) == out_channels, "run_program: the result has ", result.size(1), " channels, not ",
              out_channels);
  ws.buffers[code[2]] = at::Tensor();  // the caller's
  return result;
}

// The code as the op takes it: a 1-D int64 tensor (a Python list of thousands of ints would cost more to pass
// than a small network's smallest layers take to run)
at::IntArrayRef code_of(const at::Tensor& code) {
  TORCH_CHECK(code.dim() == 1 && code.scalar_type() == at::kLong && code.is_contiguous() && code.device().is_cpu(),
              "run_program: the code must be a contiguous 1-D int64 CPU tensor");
  return at::IntArrayRef(code.data_ptr<int64_t>(), code.numel());
}

// The program with its kept workspace (given back even when an instruction fails).
at::Tensor run_program_kept(const at::Tensor& x, at::TensorList params, const at::Tensor& code, int64_t out_channels,
                            std::vector<double>* times) {
  const at::IntArrayRef c = code_of(code);
  struct Held {
    const at::Tensor& code;
    Workspace ws;
    ~Held() { Workspaces::get().give_back(code, std::move(ws)); }
  } held{code, Workspaces::get().take(code)};
  return run_program_timed(x, params, c, out_channels, times, held.ws);
}

at::Tensor run_program(const at::Tensor& x, at::TensorList params, const at::Tensor& code, int64_t out_channels,
                       int64_t out_stride) {
  (void)out_stride;
  return run_program_kept(x, params, code, out_channels, nullptr);
}

void release_workspace(const at::Tensor& code) { Workspaces::get().release(code); }

int64_t workspace_bytes(const at::Tensor& code) { return Workspaces::get().bytes(code); }

// run_program with the seconds of each instruction (the kernels' own clock), for benchmarks
std::vector<double> run_program_profile(const at::Tensor& x, at::TensorList params, const at::Tensor& code,
                                        int64_t out_channels) {
  std::vector<double> times;
  run_program_kept(x, params, code, out_channels, &times);
  return times;
}

}  // namespace bnas_kernels

TORCH_LIBRARY_IMPL(bnas_zoo, CPU, m) {
  m.impl("run_program", &bnas_kernels::run_program);
}

TORCH_LIBRARY_FRAGMENT(bnas_zoo_kernels, m) {
  m.def("run_program_profile(Tensor x, Tensor[] params, Tensor code, int out_channels) -> float[]",
        &bnas_kernels::run_program_profile);
  m.def("release_workspace(Tensor code) -> ()", &bnas_kernels::release_workspace);
  m.def("workspace_bytes(Tensor code) -> int", &bnas_kernels::workspace_bytes);
}
