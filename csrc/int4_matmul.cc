// namax int4 weight dot for XLA:CPU, called through JAX's FFI (see namax/quant/int4_kernel.py).
//
// y[b, m, n] = sum_k x[b, m, k] * W[b, k, n],  W[k, n] = (q[k, n] - z[g, n]) * s[g, n],  g = k / group_size
//
// Storage (namax.quant.int4.Int4Weight): packed codes uint8 [*, K, N/2] (byte j holds column j in its
// low nibble and column N/2 + j in its high nibble, two's complement nibbles), scales bf16 or f32
// [*, K/group_size, N], zero points packed like the codes [*, K/group_size, N/2] (asymmetric only).
// x is f32 [*, M, K]; y is f32 [*, M, N]. The leading (batch) dims of x and of the weight have the
// same rank and broadcast against each other (size 1 against any size), as vmap's "expand_dims"
// method gives them.
//
// Per scale group and output column the kernel accumulates sum_k x_k q_k in registers (codes
// converted to f32 exactly through a 16-entry lookup table: vpermps on the zero-extended bytes),
// then adds s * (that sum - z * sum_k x_k) to y: the weight is never dequantised into memory and no
// activation is quantised, so the result equals x @ materialize(W) up to f32 rounding.
//
// Tiles: R activation rows (up to 8; 16 rows run as two tiles of 8) times V units of 16 code bytes
// (32 output columns per unit: 16 low-nibble columns j.. and 16 high-nibble columns N/2 + j..),
// V = 4 for 1-2 rows (a whole 64-byte cache line of codes per row), 2 for 3-4 rows, 1 beyond:
// 2 R V accumulators of 16 floats. Codes are read row after row, Nh bytes apart, a stride the
// hardware prefetchers lose at every page, so each row prefetches the one kPrefetchRows ahead.
//
// ISA dispatch at run time: AVX-512F, AVX2+FMA (GCC/Clang target attributes, so the library is
// built for baseline x86-64 and runs anywhere) or a portable loop. NAMAX_INT4_ISA=avx2|generic
// forces a lower one (for tests). Work is split over column strips of 64 code bytes (and batch
// entries) with an atomic counter shared by the calling thread and helpers scheduled on XLA's
// intra-op pool (FFI ThreadPool), when the dot has at least 2^22 multiply-adds.
// NAMAX_INT4_PREFETCH and NAMAX_INT4_MIN_PARALLEL override those two constants (measurements).

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

#if defined(__x86_64__) || defined(_M_X64)
#define NAMAX_X86 1
#include <immintrin.h>
#else
#define NAMAX_X86 0
#endif

namespace ffi = xla::ffi;

namespace {

struct Problem {
  const float* x;         // [M, K], row stride K
  const uint8_t* packed;  // [K, Nh]
  const void* scales;     // [G, N], bf16 (scale_bf16) or f32
  const uint8_t* zeros;   // [G, Nh] or nullptr
  const float* xsum;      // [M, G] per-group sums of x (asymmetric only)
  float* y;               // [M, N]
  int64_t M, K, Nh, gs;
  bool scale_bf16;
};

inline float bf16_to_f32(uint16_t v) {
  uint32_t bits = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline float scale_at(const Problem& p, int64_t g, int64_t n) {
  int64_t i = g * 2 * p.Nh + n;
  return p.scale_bf16 ? bf16_to_f32(static_cast<const uint16_t*>(p.scales)[i])
                      : static_cast<const float*>(p.scales)[i];
}

inline int nib_lo(uint8_t b) { return int(int8_t(uint8_t(b << 4))) >> 4; }
inline int nib_hi(uint8_t b) { return int(int8_t(b)) >> 4; }

// Portable: byte columns [j0, j1), rows [m0, m1).
void block_generic(const Problem& p, int64_t j0, int64_t j1, int64_t m0, int64_t m1) {
  const int64_t G = p.K / p.gs, N = 2 * p.Nh, w = j1 - j0;
  std::vector<float> acc(2 * w);
  for (int64_t m = m0; m < m1; ++m) {
    const float* x = p.x + m * p.K;
    float* y = p.y + m * N;
    for (int64_t g = 0; g < G; ++g) {
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t k = g * p.gs; k < (g + 1) * p.gs; ++k) {
        const uint8_t* row = p.packed + k * p.Nh;
        const float xk = x[k];
        for (int64_t j = 0; j < w; ++j) {
          uint8_t b = row[j0 + j];
          acc[j] += xk * float(nib_lo(b));
          acc[w + j] += xk * float(nib_hi(b));
        }
      }
      for (int64_t j = 0; j < w; ++j) {
        for (int h = 0; h < 2; ++h) {
          const int64_t n = j0 + j + h * p.Nh;
          float a = acc[h * w + j];
          if (p.zeros) {
            uint8_t zb = p.zeros[g * p.Nh + j0 + j];
            a -= float(h ? nib_hi(zb) : nib_lo(zb)) * p.xsum[m * G + g];
          }
          float v = a * scale_at(p, g, n);
          y[n] = g ? y[n] + v : v;
        }
      }
    }
  }
}

#if NAMAX_X86

// Rows of codes to prefetch ahead (software prefetch: see tile in csrc/int4_tile.inc).
const int64_t kPrefetchRows = std::getenv("NAMAX_INT4_PREFETCH") ? std::atoll(std::getenv("NAMAX_INT4_PREFETCH")) : 64;

// ---- The ISAs: each gives an Ops struct (its vector of floats and the handful of operations a
// tile needs); csrc/int4_tile.inc, included once per ISA under that ISA's target attribute,
// defines the tiles and the row blocking on top of it (GCC and Clang attach a target to a
// function where it is defined, not where a template is instantiated, hence one inclusion each).

// The float operations every ISA spells the same way but for the intrinsics' prefix (_mm512, _mm256).
#define NAMAX_FLOAT_OPS(P)                                                      \
  NAMAX_TARGET static V zero() { return P##_setzero_ps(); }                     \
  NAMAX_TARGET static V set1(float v) { return P##_set1_ps(v); }                \
  NAMAX_TARGET static V load(const float* at) { return P##_loadu_ps(at); }      \
  NAMAX_TARGET static void store(float* at, V v) { P##_storeu_ps(at, v); }      \
  NAMAX_TARGET static V mul(V a, V b) { return P##_mul_ps(a, b); }              \
  NAMAX_TARGET static V fmadd(V a, V b, V c) { return P##_fmadd_ps(a, b, c); }  \
  NAMAX_TARGET static V fnmadd(V a, V b, V c) { return P##_fnmadd_ps(a, b, c); }

// AVX-512: units of 16 code bytes (16 low-nibble columns + 16 high-nibble columns).
namespace avx512 {
#define NAMAX_TARGET __attribute__((target("avx512f")))
struct Ops {
  using V = __m512;
  static constexpr int kBytes = 16;   // code bytes per unit (one vector of columns per nibble)
  static constexpr int kMaxRows = 8;  // activation rows per tile
  static constexpr int units(int rows) { return rows <= 2 ? 4 : rows <= 4 ? 2 : 1; }
  NAMAX_FLOAT_OPS(_mm512)
  NAMAX_TARGET static V scales(const Problem& p, int64_t i) {
    if (p.scale_bf16) {
      __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p.scales) + i));
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    return _mm512_loadu_ps(static_cast<const float*>(p.scales) + i);
  }
  // The 16 bytes at `at` as low- and high-nibble codes, exact f32 through a 16-entry table (vpermps).
  NAMAX_TARGET static void nibbles(const uint8_t* at, V& lo, V& hi) {
    const __m512 lut = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1);
    __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(at)));
    lo = _mm512_permutexvar_ps(b, lut);
    hi = _mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), lut);
  }
};
#include "int4_tile.inc"
#undef NAMAX_TARGET
}  // namespace avx512

// AVX2 + FMA: units of 8 code bytes (8 low-nibble columns + 8 high-nibble columns).
namespace avx2 {
#define NAMAX_TARGET __attribute__((target("avx2,fma")))
struct Ops {
  using V = __m256;
  static constexpr int kBytes = 8;
  static constexpr int kMaxRows = 4;
  static constexpr int units(int rows) { return rows <= 1 ? 4 : rows <= 2 ? 2 : 1; }
  NAMAX_FLOAT_OPS(_mm256)
  NAMAX_TARGET static V scales(const Problem& p, int64_t i) {
    if (p.scale_bf16) {
      __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p.scales) + i));
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    return _mm256_loadu_ps(static_cast<const float*>(p.scales) + i);
  }
  // The 8 bytes at `at`, sign-extended: the high nibble by an arithmetic shift, the low one by
  // shifting it to the top first.
  NAMAX_TARGET static void nibbles(const uint8_t* at, V& lo, V& hi) {
    __m256i b = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(at)));
    lo = _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(b, 28), 28));
    hi = _mm256_cvtepi32_ps(_mm256_srai_epi32(b, 4));
  }
};
#include "int4_tile.inc"
#undef NAMAX_TARGET
}  // namespace avx2
#undef NAMAX_FLOAT_OPS

#endif  // NAMAX_X86

using BlockFn = void (*)(const Problem&, int64_t, int64_t, int64_t, int64_t);

struct Isa {
  BlockFn fn;
  const char* name;
};

Isa pick_isa(const char* want) {
  std::string w = want ? want : "";
#if NAMAX_X86
  __builtin_cpu_init();
  if ((w.empty() || w == "avx512") && __builtin_cpu_supports("avx512f")) return {avx512::block, "avx512"};
  if ((w.empty() || w == "avx512" || w == "avx2") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return {avx2::block, "avx2"};
#endif
  return {block_generic, "generic"};
}

const Isa kIsas[] = {pick_isa(std::getenv("NAMAX_INT4_ISA")), pick_isa("avx512"), pick_isa("avx2"),
                     pick_isa("generic")};
std::atomic<int> g_isa{0};  // index into kIsas
std::atomic<int> g_max_threads{0};  // 0: every thread of XLA's intra-op pool
std::atomic<int> g_pool_threads{-1};  // the pool size the last call saw
// Below this many code-rows (codes x activation rows) one thread does the whole dot.
const int64_t g_min_parallel = std::getenv("NAMAX_INT4_MIN_PARALLEL") ? std::atoll(std::getenv("NAMAX_INT4_MIN_PARALLEL"))
                                                                      : (int64_t(1) << 22);

const Isa& isa() { return kIsas[g_isa.load(std::memory_order_relaxed)]; }

// One batch entry's problem per work item group; items are (batch, column strip).
struct Work {
  std::vector<Problem> problems;
  int64_t strips_per_problem = 0, strip_bytes = 0, items = 0;
  BlockFn fn = nullptr;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
};

void run_items(Work& w) {
  const BlockFn fn = w.fn;
  for (;;) {
    const int64_t i = w.next.fetch_add(1, std::memory_order_relaxed);
    if (i >= w.items) return;
    const Problem& p = w.problems[i / w.strips_per_problem];
    const int64_t j0 = (i % w.strips_per_problem) * w.strip_bytes;
    fn(p, j0, std::min(p.Nh, j0 + w.strip_bytes), 0, p.M);
    w.done.fetch_add(1, std::memory_order_release);
  }
}

ffi::Error Int4MatmulImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer packed, ffi::AnyBuffer scales,
                          ffi::AnyBuffer zeros, ffi::Result<ffi::AnyBuffer> y, int64_t group_size,
                          int64_t asymmetric) {
  if (x.element_type() != ffi::DataType::F32 || y->element_type() != ffi::DataType::F32)
    return ffi::Error::InvalidArgument("namax_int4_matmul: x and y must be float32");
  if (packed.element_type() != ffi::DataType::U8 || zeros.element_type() != ffi::DataType::U8)
    return ffi::Error::InvalidArgument("namax_int4_matmul: packed codes and zero points must be uint8");
  const bool bf16 = scales.element_type() == ffi::DataType::BF16;
  if (!bf16 && scales.element_type() != ffi::DataType::F32)
    return ffi::Error::InvalidArgument("namax_int4_matmul: scales must be bfloat16 or float32");
  auto xd = x.dimensions(), wd = packed.dimensions(), sd = scales.dimensions(), yd = y->dimensions();
  const size_t rank = xd.size();
  if (rank < 2 || wd.size() != rank || sd.size() != rank || yd.size() != rank)
    return ffi::Error::InvalidArgument("namax_int4_matmul: x, codes, scales and y need the same rank >= 2");
  const int64_t M = xd[rank - 2], K = xd[rank - 1], Nh = wd[rank - 1], gs = group_size;
  if (gs < 1 || wd[rank - 2] != K || K % gs || sd[rank - 2] != K / gs || sd[rank - 1] != 2 * Nh ||
      yd[rank - 2] != M || yd[rank - 1] != 2 * Nh)
    return ffi::Error::InvalidArgument("namax_int4_matmul: inconsistent shapes");
  const int64_t G = K / gs;
  const bool asym = asymmetric != 0;
  if (asym) {
    auto zd = zeros.dimensions();
    if (zd.size() != rank || zd[rank - 2] != G || zd[rank - 1] != Nh)
      return ffi::Error::InvalidArgument("namax_int4_matmul: zero points must be uint8 [*, K/group_size, N/2]");
  }
  // Batch dims: broadcast x's against the weight's (each size 1 or the output's size).
  const size_t nb = rank - 2;
  int64_t B = 1, wB = 1;
  std::vector<int64_t> bdim(nb);
  for (size_t d = 0; d < nb; ++d) {
    const int64_t a = xd[d], b = wd[d], o = yd[d];
    if ((a != o && a != 1) || (b != o && b != 1) || sd[d] != b)
      return ffi::Error::InvalidArgument("namax_int4_matmul: batch dims do not broadcast");
    bdim[d] = o;
    B *= o;
    wB *= b;
  }
  if (B == 0 || M == 0 || Nh == 0) return ffi::Error::Success();
  if (K == 0) {  // an empty contraction
    std::memset(y->untyped_data(), 0, sizeof(float) * size_t(B * M * 2 * Nh));
    return ffi::Error::Success();
  }
  const float* xp = static_cast<const float*>(x.untyped_data());
  const uint8_t* wp = static_cast<const uint8_t*>(packed.untyped_data());
  const uint8_t* zp = static_cast<const uint8_t*>(zeros.untyped_data());
  const char* sp = static_cast<const char*>(scales.untyped_data());
  float* yp = static_cast<float*>(y->untyped_data());
  const int64_t sbytes = bf16 ? 2 : 4;

  auto work = std::make_shared<Work>();
  work->fn = isa().fn;
  std::vector<float> xsum;
  if (wB == 1) {
    // One weight for every batch entry: the batch folds into the rows (x and y are contiguous).
    // (x's batch dims then equal the output's, so x and y are contiguous [B * M, *].)
    work->problems.push_back(Problem{xp, wp, sp, asym ? zp : nullptr, nullptr, yp, B * M, K, Nh, gs, bf16});
  }
  if (work->problems.empty()) {
    std::vector<int64_t> idx(nb, 0);
    for (int64_t b = 0; b < B; ++b) {
      int64_t xo = 0, wo = 0, xs = 1, ws = 1;
      for (size_t d = nb; d-- > 0;) {
        if (xd[d] != 1) xo += idx[d] * xs;
        if (wd[d] != 1) wo += idx[d] * ws;
        xs *= xd[d];
        ws *= wd[d];
      }
      work->problems.push_back(Problem{xp + xo * M * K, wp + wo * K * Nh, sp + wo * G * 2 * Nh * sbytes,
                                       asym ? zp + wo * G * Nh : nullptr, nullptr, yp + b * M * 2 * Nh, M, K, Nh, gs,
                                       bf16});
      for (size_t d = nb; d-- > 0;) {
        if (++idx[d] < bdim[d]) break;
        idx[d] = 0;
      }
    }
  }
  if (asym) {
    // Per-row, per-group sums of x, for the zero points: s * (sum x q - z sum x).
    int64_t rows = 0;
    for (auto& p : work->problems) rows += p.M;
    xsum.resize(rows * G);
    int64_t at = 0;
    for (auto& p : work->problems) {
      float* out = xsum.data() + at;
      for (int64_t m = 0; m < p.M; ++m)
        for (int64_t g = 0; g < G; ++g) {
          float s = 0.f;
          for (int64_t k = g * gs; k < (g + 1) * gs; ++k) s += p.x[m * K + k];
          out[m * G + g] = s;
        }
      p.xsum = out;
      at += p.M * G;
    }
  }
  // Column strips of 64 bytes (128 output columns): a cache line of codes per row.
  work->strip_bytes = 64;
  work->strips_per_problem = (Nh + 63) / 64;
  work->items = work->strips_per_problem * int64_t(work->problems.size());
  int64_t code_rows = 0;  // codes times activation rows: the multiply-adds
  for (auto& p : work->problems) code_rows += 2 * K * Nh * p.M;
  int64_t threads = pool.num_threads();
  g_pool_threads.store(int(threads), std::memory_order_relaxed);
  if (g_max_threads.load() > 0) threads = std::min<int64_t>(threads, g_max_threads.load());
  int64_t helpers = std::min<int64_t>(threads > 0 ? threads - 1 : 0, work->items - 1);
  if (code_rows < g_min_parallel) helpers = 0;  // too small to be worth waking a thread
  for (int64_t h = 0; h < helpers; ++h) {
    pool.Schedule([work]() { run_items(*work); });
  }
  run_items(*work);
  // Wait for the strips helpers are still computing: spin briefly, then yield the core (a
  // helper descheduled by other load must get to run).
  for (int spins = 0; work->done.load(std::memory_order_acquire) < work->items; ++spins) {
    if (spins < 2000) {
#if NAMAX_X86
      _mm_pause();
#endif
    } else {
      std::this_thread::yield();
    }
  }
  return ffi::Error::Success();
}

}  // namespace

#define NAMAX_EXPORT __attribute__((visibility("default")))
extern "C" NAMAX_EXPORT XLA_FFI_Error* NamaxInt4Matmul(XLA_FFI_CallFrame* call_frame);

XLA_FFI_DEFINE_HANDLER_SYMBOL(NamaxInt4Matmul, Int4MatmulImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()  // x f32 [*, M, K]
                                  .Arg<ffi::AnyBuffer>()  // packed codes u8 [*, K, N/2]
                                  .Arg<ffi::AnyBuffer>()  // scales bf16/f32 [*, K/gs, N]
                                  .Arg<ffi::AnyBuffer>()  // zero points u8 [*, K/gs, N/2], or u8 [1] if symmetric
                                  .Ret<ffi::AnyBuffer>()  // y f32 [*, M, N]
                                  .Attr<int64_t>("group_size")
                                  .Attr<int64_t>("asymmetric"));

// The instruction set in use ("avx512", "avx2" or "generic").
extern "C" NAMAX_EXPORT const char* namax_int4_isa() { return isa().name; }

// Use at most `n` threads (0: the whole intra-op pool); for measurements. Returns the pool-independent cap.
extern "C" NAMAX_EXPORT int namax_int4_set_threads(int n) {
  g_max_threads.store(n > 0 ? n : 0);
  return g_max_threads.load();
}

// The intra-op pool size the last call saw (-1 before any call).
extern "C" NAMAX_EXPORT int namax_int4_pool_threads() { return g_pool_threads.load(); }

// Use at most the instruction set `name` (as NAMAX_INT4_ISA does; for tests); returns the one chosen.
extern "C" NAMAX_EXPORT const char* namax_int4_set_isa(const char* name) {
  const std::string w = name ? name : "";
  g_isa.store(w == "avx512" ? 1 : w == "avx2" ? 2 : w == "generic" ? 3 : 0);
  return isa().name;
}
