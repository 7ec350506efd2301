/* Fused per-pixel arithmetic of the fingerprint generator (impression.ink_layer, the optical
 * sensor, and the step of ridge_growth.grow_ridges after its convolution), one pass over the
 * canvas instead of one numpy or torch pass per operation.
 *
 * Each function is the float32 formula written in numpy (or torch) in pixel_kernels.py,
 * evaluated operation by operation in the same order: every product and sum is one IEEE
 * float32 operation rounded to nearest, so the results are the same bits as numpy's. That
 * is why this file must be compiled without -ffast-math and with -ffp-contract=off (no fused
 * multiply-add, which rounds once for two operations); the Makefile does. Constants arrive as float: Python rounds its doubles to float32 exactly as
 * numpy does for a Python scalar beside a float32 array (NEP 50).
 *
 * Why: a 500 x 400 canvas is 800 KB per float32 plane; numpy streams every plane through the
 * cache once per operation (about 40 operations here): 1.25 ms of a plain impression's
 * arithmetic, 0.56 ms here (one core, 2026-12-03; pixel_kernels.py has the figures).
 *
 * Strides are in elements; a plane whose stride is its width is contiguous. No two planes
 * overlap (restrict); where numpy works in place, the kernel takes one plane in and out.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* one build serves every x86-64 machine of a cluster: AVX2 where present, SSE2 otherwise
 * (AVX2 alone enables no FMA, and -ffp-contract=off forbids contraction anyway) */
#define MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define MULTIVERSION
#endif

static inline float clip(float x, float lo, float hi) {
    /* np.clip for numbers that are not NaN */
    return x < lo ? lo : (x > hi ? hi : x);
}

/* Version of this file's functions and their signatures; pixel_kernels.py refuses a library
 * built from another version (a stale build would compute something else). */
int bm_kernels_version(void) { return 1; }

/* impression.ink_layer, from the contact rim to the ink before sweat bridges:
 *   touch = clip(0.25 touch_noise + rim, 0, 1) clip(finger, 0, 1)
 *   fade  = clip(1.6 touch - 0.2, 0, 1)
 *   threshold = (drift + thr0) + break (0.8 rough + 0.6 fine) [+ dry |fine|] + 1.2 (1 - fade)
 *   ink   = clip((field - threshold) / 0.35 + 0.5, 0, 1)
 * in place: touch holds touch_noise on entry, ink holds field. */
MULTIVERSION
void bm_ink_core(int h, int w, float *restrict touch, const float *restrict rim, ptrdiff_t rim_stride,
                 const float *restrict finger, ptrdiff_t finger_stride, const float *restrict drift,
                 ptrdiff_t drift_stride, float *restrict ink, const float *restrict fine,
                 const float *restrict rough, float thr0, float break_amount, int dry, float dry_gain,
                 float inv_width, float *restrict fade) {
    for (int y = 0; y < h; y++) {
        const ptrdiff_t o = (ptrdiff_t)y * w;
        const float *rr = rim + (ptrdiff_t)y * rim_stride;
        const float *fr = finger + (ptrdiff_t)y * finger_stride;
        const float *dr = drift + (ptrdiff_t)y * drift_stride;
        for (int x = 0; x < w; x++) {
            float t = touch[o + x] * 0.25f;
            t = t + rr[x];
            t = clip(t, 0.0f, 1.0f);
            t = t * clip(fr[x], 0.0f, 1.0f);
            float f = t * 1.6f;
            f = f - 0.2f;
            f = clip(f, 0.0f, 1.0f);
            const float fn = fine[o + x];
            float r = rough[o + x] * 0.8f;
            r = r + fn * 0.6f;
            r = r * break_amount;
            float thr = dr[x] + thr0;
            thr = thr + r;
            if (dry) {
                float g = fabsf(fn);
                g = g * dry_gain;
                thr = thr + g;
            }
            float rim_thin = 1.0f - f;
            rim_thin = rim_thin * 1.2f;
            thr = thr + rim_thin;
            float v = ink[o + x] - thr;
            v = v * inv_width;
            v = v + 0.5f;
            touch[o + x] = t;
            fade[o + x] = f;
            ink[o + x] = clip(v, 0.0f, 1.0f);
        }
    }
}

/* impression.ink_layer, the rest (each optional plane may be NULL):
 *   [sweat]  ink = max(ink, 1.4 spread clip(bridge_noise + bridge0 - 1, 0, 1))
 *            ink = ink sqrt(fade)
 *   [spots]  ink = ink (1 - lost)
 *   [smear]  ink = max(ink, 0.85 smear fade)
 *            ink = clip(ink, 0, 1)
 * in place on ink. */
MULTIVERSION
void bm_ink_finish(ptrdiff_t n, float *restrict ink, const float *restrict fade, const float *restrict spread,
                   const float *restrict bridge_noise, float bridge0, const float *restrict lost,
                   const float *restrict smear) {
    for (ptrdiff_t i = 0; i < n; i++) {
        float v = ink[i];
        if (spread) {
            float b = bridge_noise[i] + bridge0;
            b = b - 1.0f;
            b = clip(b, 0.0f, 1.0f);
            float s = spread[i] * b;
            s = s * 1.4f;
            v = v > s ? v : s;
        }
        const float f = fade[i];
        v = v * sqrtf(f);
        if (lost) {
            v = v * (1.0f - lost[i]);
            if (smear) {
                float s = smear[i] * f;
                s = s * 0.85f;
                v = v > s ? v : s;
            }
        }
        ink[i] = clip(v, 0.0f, 1.0f);
    }
}

/* sensors.optical_image, before the lens blur:
 *   contact = clip((texture_amount texture_noise + 1) ink, 0, 1) (1.8 - 0.8 contact)
 *   grain   = (grain_bytes - 127.5) / 73.9
 *   grey    = (shade + background) - residue_gain max(residue_noise - residue0, 0)
 *             - contrast contact - grain_gain contact grain
 */
MULTIVERSION
void bm_optical_grey(ptrdiff_t n, const float *restrict texture_noise, float texture_amount,
                     const float *restrict ink, const float *restrict shade, const uint8_t *restrict grain_bytes,
                     float grain_scale, const float *restrict residue_noise, float residue0, float residue_gain,
                     float background, float contrast, float grain_gain, float *restrict grey) {
    for (ptrdiff_t i = 0; i < n; i++) {
        float c = texture_noise[i] * texture_amount;
        c = c + 1.0f;
        c = c * ink[i];
        c = clip(c, 0.0f, 1.0f);
        float lift = c * 0.8f;
        lift = 1.8f - lift;
        c = c * lift;
        float g = (float)grain_bytes[i];
        g = g - 127.5f;
        g = g * grain_scale;
        float r = residue_noise[i] - residue0;
        r = r > 0.0f ? r : 0.0f;
        r = r * residue_gain;
        float v = shade[i] + background;
        v = v - r;
        v = v - c * contrast;
        float k = c * grain_gain;
        k = k * g;
        grey[i] = v - k;
    }
}

static inline uint8_t to_byte(float v) {
    /* pixel_kernels.to_bytes: clip(rint(v), 0, 255) as uint8; rintf rounds half to even, as np.rint */
    v = rintf(v);
    return (uint8_t)clip(v, 0.0f, 255.0f);
}

/* pixel_kernels._add_shifted then to_bytes, for the optical sensor's camera noise:
 *   out = bytes(grey + (grain_scale (grain_bytes - 127.5)) rolled by (dy, dx) * noise_scale)
 * with 0 <= dy < h, 0 <= dx < w. */
static inline void add_grain_row(int n, const float *restrict grey, const uint8_t *restrict grain_bytes,
                                 float grain_scale, float noise_scale, uint8_t *restrict out) {
    for (int x = 0; x < n; x++) {
        float g = (float)grain_bytes[x];
        g = g - 127.5f;
        g = g * grain_scale;
        g = g * noise_scale;
        out[x] = to_byte(grey[x] + g);
    }
}

MULTIVERSION
void bm_add_rolled_grain_to_bytes(int h, int w, const float *restrict grey, const uint8_t *restrict grain_bytes,
                                  float grain_scale, float noise_scale, int dy, int dx, uint8_t *restrict out) {
    for (int y = 0; y < h; y++) {
        const uint8_t *src = grain_bytes + (ptrdiff_t)(y >= dy ? y - dy : y - dy + h) * w;
        const float *gr = grey + (ptrdiff_t)y * w;
        uint8_t *dst = out + (ptrdiff_t)y * w;
        /* the row in two runs, so that no loop branches per pixel: x < dx reads from w - dx */
        add_grain_row(dx, gr, src + (w - dx), grain_scale, noise_scale, dst);
        add_grain_row(w - dx, gr + dx, src, grain_scale, noise_scale, dst + dx);
    }
}

/* ridge_growth.grow_ridges, one iteration after the convolution, for each sample s and pixel p:
 *   c_k  = responses[flat[s, k, p]] weights[s, k, p]                 (k = 0..3)
 *   out  = clip(gain (((c_0 + c_1) + c_2) + c_3) - bias, -1, 1)
 *   changed[s] = #p with (out > 0) != (previous > 0)                  (when changed is not NULL)
 * flat and weights are [b, 4, hw], previous and out [b, hw]. */
MULTIVERSION
void bm_growth_step(int b, ptrdiff_t hw, const float *restrict responses, const int64_t *restrict flat,
                    const float *restrict weights, float gain, float bias, const float *restrict previous,
                    float *restrict out, int64_t *restrict changed) {
    for (int s = 0; s < b; s++) {
        const int64_t *f = flat + (ptrdiff_t)s * 4 * hw;
        const float *wt = weights + (ptrdiff_t)s * 4 * hw;
        const float *prev = previous + (ptrdiff_t)s * hw;
        float *o = out + (ptrdiff_t)s * hw;
        for (ptrdiff_t p = 0; p < hw; p++) {
            float v = responses[f[p]] * wt[p];
            v = v + responses[f[hw + p]] * wt[hw + p];
            v = v + responses[f[2 * hw + p]] * wt[2 * hw + p];
            v = v + responses[f[3 * hw + p]] * wt[3 * hw + p];
            v = v * gain;
            v = v - bias;
            o[p] = clip(v, -1.0f, 1.0f);
        }
        if (changed) {
            int64_t n = 0;
            for (ptrdiff_t p = 0; p < hw; p++) n += (o[p] > 0.0f) != (prev[p] > 0.0f);
            changed[s] = n;
        }
    }
}

