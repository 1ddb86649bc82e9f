//! A design study, not part of fastmlp's build: the tutorial's 784-50-100-10 sigmoid network
//! with every layer's outputs in the vector lanes, reading the rows where they lie (no packing).
//! Timing only: no zero-step skipping, no threads, a plain exp without fastmlp's underflow
//! guards, and the subnormal flush fastmlp's contract needs only as an option (a copy of the
//! rows; without it, reading the rows in place stands for the MXCSR's denormals-are-zero mode,
//! which dense random rows cannot tell from a flush). Driven by
//! `outputs_in_lanes.py`, which builds it with `rustc` and times it beside `fastmlp` in one
//! process; the results are in BENCHMARKS.md, "Intel, session 13".
use std::arch::x86_64::*;

const FEATURES: usize = 784;
/// The first layer's outputs: 3 vectors of 16, and 2 tail columns as dot products along k.
const HIDDEN1: usize = 50;
const HIDDEN1_VECTORS: usize = 3;
/// The second layer's outputs: 7 vectors, the last holding 4 live lanes (weights padded to 112).
const HIDDEN2: usize = 100;
const HIDDEN2_PADDED: usize = 112;
const HIDDEN2_VECTORS: usize = 7;
/// The output layer: one vector, 10 live lanes (weights padded to 16).
const OUTPUTS: usize = 10;
const LAYER1_ROWS: usize = 8; // 24 accumulators + 3 weight vectors + 1 broadcast
const LAYER2_ROWS: usize = 3; // 21 accumulators + 7 weight vectors + 1 broadcast
const LAYER3_ROWS: usize = 8;
const CHUNK: usize = 48; // a multiple of every tile's rows
const COPY_ROWS: u32 = 128;
const PREFETCH: u32 = 256;

/// Where a tile's 8 rows are read from: `stride` floats apart, holding steps `ks..ke` from
/// `x` on (the rows themselves, or a block of them copied).
#[derive(Clone, Copy)]
struct RowsBlock {
    x: *const f32,
    stride: usize,
    ks: usize,
    ke: usize,
}

/// 8 rows x 48 columns over steps `ks..ke`, from the bias at step 0 and from `h` after it:
/// per step, 3 aligned weight loads, 8 broadcasts, 24 multiply-adds.
#[target_feature(enable = "avx512f,fma")]
unsafe fn layer1_tile(
    rows: RowsBlock,
    w: *const f32,
    bias: *const f32,
    h: *mut f32,
    prefetch: Option<*const u8>,
) {
    let RowsBlock { x, stride, ks, ke } = rows;
    let mut acc = [[_mm512_setzero_ps(); HIDDEN1_VECTORS]; LAYER1_ROWS];
    for (r, row) in acc.iter_mut().enumerate() {
        for (v, a) in row.iter_mut().enumerate() {
            *a = if ks == 0 {
                _mm512_loadu_ps(bias.add(16 * v))
            } else {
                _mm512_loadu_ps(h.add(r * HIDDEN1 + 16 * v))
            };
        }
    }
    for k in ks..ke {
        let wk = w.add(k * 16 * HIDDEN1_VECTORS);
        let w0 = _mm512_load_ps(wk);
        let w1 = _mm512_load_ps(wk.add(16));
        let w2 = _mm512_load_ps(wk.add(32));
        for (r, row) in acc.iter_mut().enumerate() {
            let xk = _mm512_set1_ps(*x.add(r * stride + k - ks));
            row[0] = _mm512_fmadd_ps(xk, w0, row[0]);
            row[1] = _mm512_fmadd_ps(xk, w1, row[1]);
            row[2] = _mm512_fmadd_ps(xk, w2, row[2]);
        }
        // One cache line of the next chunk's 8 rows every second step: over the 784 steps,
        // 392 lines, all of them.
        if let (Some(next), 0) = (prefetch, k % 2) {
            _mm_prefetch::<_MM_HINT_T1>(next.wrapping_add(k * 32).cast());
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (v, a) in row.iter().enumerate() {
            _mm512_storeu_ps(h.add(r * HIDDEN1 + 16 * v), *a);
        }
    }
}

/// The 2 tail columns of 8 rows over steps `ks..ke`: 16 independent chains, 16 lanes of k
/// each, kept in `partial` between blocks and summed into `h` after the last.
#[target_feature(enable = "avx512f,fma")]
unsafe fn layer1_tail(
    rows: RowsBlock,
    wt: *const f32,
    bias: *const f32,
    partial: &mut [[__m512; 2]; LAYER1_ROWS],
    h: *mut f32,
) {
    let RowsBlock { x, stride, ks, ke } = rows;
    let mut acc = if ks == 0 {
        [[_mm512_setzero_ps(); 2]; LAYER1_ROWS]
    } else {
        *partial
    };
    for k in (ks..ke).step_by(16) {
        let w0 = _mm512_load_ps(wt.add(k));
        let w1 = _mm512_load_ps(wt.add(FEATURES + k));
        for (r, row) in acc.iter_mut().enumerate() {
            let xv = _mm512_loadu_ps(x.add(r * stride + k - ks));
            row[0] = _mm512_fmadd_ps(xv, w0, row[0]);
            row[1] = _mm512_fmadd_ps(xv, w1, row[1]);
        }
    }
    if ke < FEATURES {
        *partial = acc;
        return;
    }
    for (r, row) in acc.iter().enumerate() {
        *h.add(r * HIDDEN1 + 48) = *bias.add(48) + _mm512_reduce_add_ps(row[0]);
        *h.add(r * HIDDEN1 + 49) = *bias.add(49) + _mm512_reduce_add_ps(row[1]);
    }
}

/// A clamped Cody-Waite exp with a degree-7 Taylor polynomial: about the operation count of
/// fastmlp's, without its underflow guards.
#[target_feature(enable = "avx512f,fma")]
unsafe fn exp_vector(x: __m512) -> __m512 {
    let x = _mm512_min_ps(
        _mm512_max_ps(x, _mm512_set1_ps(-87.0)),
        _mm512_set1_ps(88.0),
    );
    let n = _mm512_roundscale_ps::<0>(_mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm512_set1_ps(1.0 / 5040.0);
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(p, n)
}

#[target_feature(enable = "avx512f,fma")]
unsafe fn sigmoid_vector(v: __m512) -> __m512 {
    let one = _mm512_set1_ps(1.0);
    let e = exp_vector(_mm512_sub_ps(_mm512_setzero_ps(), v));
    _mm512_div_ps(one, _mm512_add_ps(one, e))
}

/// Sigmoid in place over `len` contiguous values, 4 vectors side by side as fastmlp does.
#[target_feature(enable = "avx512f,fma")]
unsafe fn sigmoid_in_place(h: *mut f32, len: usize) {
    let mut i = 0;
    while i + 64 <= len {
        let mut v = [_mm512_setzero_ps(); 4];
        for (j, vj) in v.iter_mut().enumerate() {
            *vj = sigmoid_vector(_mm512_loadu_ps(h.add(i + 16 * j)));
        }
        for (j, vj) in v.iter().enumerate() {
            _mm512_storeu_ps(h.add(i + 16 * j), *vj);
        }
        i += 64;
    }
    while i + 16 <= len {
        _mm512_storeu_ps(h.add(i), sigmoid_vector(_mm512_loadu_ps(h.add(i))));
        i += 16;
    }
    for j in i..len {
        *h.add(j) = 1.0 / (1.0 + (-*h.add(j)).exp());
    }
}

/// 3 rows x 112 columns (100 live); each row's 12 dead lanes land in the next row's first
/// columns, which that row's store then overwrites, or in the buffer's slack.
#[target_feature(enable = "avx512f,fma")]
unsafe fn layer2_tile(h1: *const f32, w: *const f32, bias: *const f32, h2: *mut f32) {
    let mut acc = [[_mm512_setzero_ps(); HIDDEN2_VECTORS]; LAYER2_ROWS];
    for row in acc.iter_mut() {
        for (v, a) in row.iter_mut().enumerate() {
            *a = _mm512_load_ps(bias.add(16 * v));
        }
    }
    for k in 0..HIDDEN1 {
        let wk = w.add(k * HIDDEN2_PADDED);
        let mut wv = [_mm512_setzero_ps(); HIDDEN2_VECTORS];
        for (v, wvv) in wv.iter_mut().enumerate() {
            *wvv = _mm512_load_ps(wk.add(16 * v));
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let hk = _mm512_set1_ps(*h1.add(r * HIDDEN1 + k));
            for (a, wvv) in row.iter_mut().zip(wv) {
                *a = _mm512_fmadd_ps(hk, wvv, *a);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (v, a) in row.iter().enumerate() {
            _mm512_storeu_ps(h2.add(r * HIDDEN2 + 16 * v), *a);
        }
    }
}

#[target_feature(enable = "avx512f,fma")]
unsafe fn layer3_tile(h2: *const f32, w: *const f32, bias: *const f32, o: *mut f32) {
    let mut acc = [_mm512_load_ps(bias); LAYER3_ROWS];
    for k in 0..HIDDEN2 {
        let wk = _mm512_load_ps(w.add(k * 16));
        for (r, a) in acc.iter_mut().enumerate() {
            *a = _mm512_fmadd_ps(_mm512_set1_ps(*h2.add(r * HIDDEN2 + k)), wk, *a);
        }
    }
    for (r, a) in acc.iter().enumerate() {
        _mm512_store_ps(o.add(r * 16), *a);
    }
}

#[target_feature(enable = "avx512f,fma")]
unsafe fn softmax_rows(o: *const f32, out: *mut f32, rows: usize) {
    let live: __mmask16 = (1 << OUTPUTS) - 1;
    for r in 0..rows {
        let v = _mm512_maskz_load_ps(live, o.add(16 * r));
        let max = _mm512_mask_reduce_max_ps(live, v);
        let e = _mm512_maskz_mov_ps(live, exp_vector(_mm512_sub_ps(v, _mm512_set1_ps(max))));
        let sum = _mm512_reduce_add_ps(e);
        _mm512_mask_storeu_ps(
            out.add(OUTPUTS * r),
            live,
            _mm512_div_ps(e, _mm512_set1_ps(sum)),
        );
    }
}

/// Copies steps `ks..ke` of `rows` rows into `to` (64-byte aligned, `ke - ks` apart), subnormal
/// values made zero of their sign by their bits, as fastmlp's packing reads them: what a design
/// without packing would need instead of the MXCSR's denormals-are-zero mode.
#[target_feature(enable = "avx512f")]
unsafe fn copy_flushing_subnormals(
    from: *const f32,
    to: *mut f32,
    rows: usize,
    ks: usize,
    ke: usize,
) {
    let exponent = _mm512_set1_epi32(0x7f80_0000);
    let sign = _mm512_set1_epi32(i32::MIN);
    let width = ke - ks;
    for r in 0..rows {
        for k in (0..width).step_by(16) {
            let v = _mm512_loadu_si512(from.add(r * FEATURES + ks + k).cast());
            let subnormal_or_zero = _mm512_testn_epi32_mask(v, exponent);
            let flushed = _mm512_mask_and_epi32(v, subnormal_or_zero, v, sign);
            _mm512_store_si512(to.add(r * width + k).cast(), flushed);
        }
    }
}

#[repr(C, align(64))]
struct Scratch {
    rows: [f32; CHUNK * FEATURES],
    h1: [f32; CHUNK * HIDDEN1 + 16],
    h2: [f32; CHUNK * HIDDEN2 + 16],
    o: [f32; CHUNK * 16],
}

/// Runs the stages whose bits are set in `stages` (1 layer 1's main tiles, 2 its tail, 4 its
/// sigmoid, 8 layer 2, 16 its sigmoid, 32 layer 3, 64 the softmax; 127 is the whole network)
/// over the first `rows - rows % 48` rows. With 128 also set, each chunk's rows are first
/// copied to an aligned scratch with their subnormal values flushed, and read from there; with
/// 256, layer 1's tiles pull the next chunk's rows into L2 as they go.
///
/// # Safety
/// The CPU has AVX-512F. `x` holds `rows * 784` floats and `out` room for `rows * 10`; `w1` is
/// 784 x 48 (columns 0..48), `w1t` 2 x 784 (columns 48 and 49, transposed), `w2` 50 x 112 and
/// `w3` 100 x 16 (zero-padded), all 64-byte aligned; `b1` holds 50 floats, `b2` 112 and `b3` 16
/// (zero-padded, 64-byte aligned).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn forward(
    x: *const f32,
    rows: usize,
    w1: *const f32,
    w1t: *const f32,
    b1: *const f32,
    w2: *const f32,
    b2: *const f32,
    w3: *const f32,
    b3: *const f32,
    out: *mut f32,
    stages: u32,
) {
    let mut s = Box::new(Scratch {
        rows: [0.0; CHUNK * FEATURES],
        h1: [0.0; CHUNK * HIDDEN1 + 16],
        h2: [0.0; CHUNK * HIDDEN2 + 16],
        o: [0.0; CHUNK * 16],
    });
    let (h1, h2, o) = (s.h1.as_mut_ptr(), s.h2.as_mut_ptr(), s.o.as_mut_ptr());
    let copied_rows = s.rows.as_mut_ptr();
    let mut tail_partials = [[[_mm512_setzero_ps(); 2]; LAYER1_ROWS]; CHUNK / LAYER1_ROWS];
    for first in (0..rows - rows % CHUNK).step_by(CHUNK) {
        // SAFETY: every pointer below stays inside the buffers the caller vouched for, or the
        // scratch, whose slack takes the dead lanes of each last row.
        unsafe {
            let xc = x.add(first * FEATURES);
            // In blocks of 112 steps when copying (a 48-row block stays in L1 between its copy
            // and its use), in one block of all 784 steps when reading the rows in place.
            let block = if stages & COPY_ROWS != 0 {
                112
            } else {
                FEATURES
            };
            for ks in (0..FEATURES).step_by(block) {
                let ke = ks + block;
                let rows_at = |t: usize| {
                    if stages & COPY_ROWS != 0 {
                        RowsBlock {
                            x: copied_rows.add(t * block),
                            stride: block,
                            ks,
                            ke,
                        }
                    } else {
                        RowsBlock {
                            x: xc.add(t * FEATURES),
                            stride: FEATURES,
                            ks,
                            ke,
                        }
                    }
                };
                if stages & COPY_ROWS != 0 {
                    copy_flushing_subnormals(xc, copied_rows, CHUNK, ks, ke);
                }
                for t in (0..CHUNK).step_by(LAYER1_ROWS) {
                    if stages & 1 != 0 {
                        let next = x.wrapping_add((first + CHUNK + t) * FEATURES).cast::<u8>();
                        let prefetch = (stages & PREFETCH != 0).then_some(next);
                        layer1_tile(rows_at(t), w1, b1, h1.add(t * HIDDEN1), prefetch);
                    }
                    if stages & 2 != 0 {
                        let partial = &mut tail_partials[t / LAYER1_ROWS];
                        layer1_tail(rows_at(t), w1t, b1, partial, h1.add(t * HIDDEN1));
                    }
                }
            }
            if stages & 4 != 0 {
                sigmoid_in_place(h1, CHUNK * HIDDEN1);
            }
            if stages & 8 != 0 {
                for t in (0..CHUNK).step_by(LAYER2_ROWS) {
                    layer2_tile(h1.add(t * HIDDEN1), w2, b2, h2.add(t * HIDDEN2));
                }
            }
            if stages & 16 != 0 {
                sigmoid_in_place(h2, CHUNK * HIDDEN2);
            }
            if stages & 32 != 0 {
                for t in (0..CHUNK).step_by(LAYER3_ROWS) {
                    layer3_tile(h2.add(t * HIDDEN2), w3, b3, o.add(t * 16));
                }
            }
            if stages & 64 != 0 {
                softmax_rows(o, out.add(first * OUTPUTS), CHUNK);
            }
        }
    }
}
