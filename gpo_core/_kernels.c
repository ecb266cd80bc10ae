/* Fused per-step kernels for gpo_core: one pass in C where numpy needs a dozen calls.
 *
 * Why: after the two matrix-vector products of a big game's step, regret matching+ and the
 * running averages are ~25 numpy calls on n-vectors, each a Python dispatch (about 1 us) on
 * data just evicted from the caches; at 1000 x 1000 that added a third (float64) to two thirds
 * (float32) to the time of the products themselves (a 2-core AMD EPYC). These functions do the
 * same arithmetic in one call per player. They are optional: without a C compiler gpo_core runs
 * the numpy code in rules.py and dynamics.py (see gpo_core/_fused.py).
 *
 * Arithmetic, so that results do not depend on the path that computed them:
 *  - elementwise updates round in the arrays' own precision, two roundings for a*b + c exactly
 *    as numpy does (the build passes -ffp-contract=off: no fused multiply-add);
 *  - the two reductions of regret matching (<u, x> and the sum of the new regrets) accumulate
 *    in double with four partial sums, for float32 as well, and every batch row is summed alike:
 *    a game alone and the same game inside a batch give the same bits.
 *
 * regret_matching(u, x, q, out, discount, predictive) -> int
 *     One regret-matching+ step per row of the C-contiguous float64 or float32 arrays (all of
 *     the same shape and dtype, last axis = actions): r = u - <u, x> with entries within
 *     16 eps max|u| of zero set to 0; q <- [discount * q + r]^+ (discount = 1.0 multiplies
 *     exactly); played = [q + r]^+ if predictive else q; out = played / sum(played), or x where
 *     that sum is 0. Returns 0, or 1 if some row of u is not finite (then the arrays are
 *     partly written and the caller raises).
 *
 * accumulate(w, x, x_sum, u, u_sum) -> float
 *     x_sum += w * x and u_sum += w * u, elementwise (each pair of arrays of one shape and
 *     dtype), and returns max(u_sum) over the whole buffer.
 *
 * hedge(u, base, cum, z_out, p_out, cum_out, eta, ftrl) -> int
 *     Hedge's step per row (see DEFINE_HEDGE): cum_out = cum + u, the new normalised logits
 *     z_out and the strategy p_out from base (the logits, or the prior with ftrl) in one exp
 *     pass. Returns 0, or 1 if some row of u is not finite.
 *
 * hedge_step(u, base, cum, z_out, p_out, cum_out, eta, ftrl, w, x, x_sum, acc, acc_sum
 *            [, tops, nows]) -> (float, float)
 *     hedge, then accumulate(w, x, x_sum, acc, acc_sum), in one call (play's Hedge step for one
 *     player), returning (and with tops and nows writing) as step does.
 *
 * mirror(u, base, m, z_out, p_out, eta, k, d) -> int
 * mirror_step(u, base, m, z_out, p_out, eta, k, d, w, x, x_sum, acc, acc_sum[, tops, nows])
 *     MMD's step (the logits base pulled toward the log-magnet m, k = eta * alpha,
 *     d = 1 + eta * alpha) through Hedge's exp pass, and with the sums as hedge_step.
 *
 * vector_exp(address_d, address_f) -> bool
 *     Hedge's exp pass uses glibc's vector exp at these addresses (found by gpo_core/_fused.py),
 *     or the scalar exp when they are 0 or the CPU lacks AVX2 (see exp_rows_d).
 *
 * step(u, x, q, out, discount, predictive, w, x_sum, acc, acc_sum[, tops, nows]) -> (float, float)
 *     Both in one call (play's hot path for one player): returns (max(acc_sum), max(acc)) over
 *     the whole buffer, or (nan, nan) when u is not finite (then nothing is accumulated). With
 *     tops and nows (one entry per row: a batch of games) it writes each row's maxima there
 *     instead and returns (0.0, 0.0), or (nan, nan).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <string.h>

/* 'd' -> 8, 'f' -> 4, anything else (other types, byte-swapped) -> 0 */
static int item_kind(const Py_buffer *view) {
    const char *f = view->format;
    if (f == NULL) return 0;
    if (f[0] == '<' || f[0] == '=' || f[0] == '@') {
#if PY_BIG_ENDIAN
        if (f[0] == '<') return 0;
#endif
        f++;
    }
    if (f[0] == 'd' && f[1] == '\0' && view->itemsize == 8) return 8;
    if (f[0] == 'f' && f[1] == '\0' && view->itemsize == 4) return 4;
    return 0;
}

/* Take C-contiguous buffers of one float type and one shape; on failure release what was taken
 * and set a TypeError/ValueError. */
static int take(PyObject *const *objs, const int *writable, int count, Py_buffer *views) {
    for (int k = 0; k < count; k++) {
        int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable[k] ? PyBUF_WRITABLE : 0);
        if (PyObject_GetBuffer(objs[k], &views[k], flags) < 0) {
            for (int j = 0; j < k; j++) PyBuffer_Release(&views[j]);
            return -1;
        }
    }
    int kind = item_kind(&views[0]);
    for (int k = 0; k < count; k++) {
        if (kind == 0 || item_kind(&views[k]) != kind || views[k].ndim < 1) {
            PyErr_SetString(PyExc_TypeError,
                            "gpo_core._kernels: arrays must be float64 or float32, one dtype");
            goto fail;
        }
    }
    return kind;
fail:
    for (int j = 0; j < count; j++) PyBuffer_Release(&views[j]);
    return -1;
}

static void release(Py_buffer *views, int count) {
    for (int k = 0; k < count; k++) PyBuffer_Release(&views[k]);
}

static int same_shape(const Py_buffer *a, const Py_buffer *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

/* 1 if views[1..count-1] all have views[0]'s shape; else release them all, set a ValueError,
 * and return 0. */
static int one_shape(Py_buffer *views, int count) {
    for (int k = 1; k < count; k++) {
        if (!same_shape(&views[0], &views[k])) {
            release(views, count);
            PyErr_SetString(PyExc_ValueError, "gpo_core._kernels: arrays of different shapes");
            return 0;
        }
    }
    return 1;
}

/* take() and one_shape() for arrays of one shape whose last axis holds the actions: sets the
 * number of actions n, of entries size and of rows (games); returns the kind, or -1 with an
 * exception set and nothing held. */
static int take_rows(PyObject *const *objs, const int *writable, int count, Py_buffer *views,
                     Py_ssize_t *n, Py_ssize_t *size, Py_ssize_t *rows) {
    int kind = take(objs, writable, count, views);
    if (kind < 0) return -1;
    if (!one_shape(views, count)) return -1;
    *n = views[0].shape[views[0].ndim - 1];
    *size = views[0].len / views[0].itemsize;
    *rows = *n > 0 ? *size / *n : 0;
    return kind;
}

/* A kernel's float parameter (discount, eta) and flag (predictive, ftrl); 0, or -1 with an
 * exception set. */
static int parse_param_flag(PyObject *a, PyObject *flag, double *value, int *on) {
    *value = PyFloat_AsDouble(a);
    if (*value == -1.0 && PyErr_Occurred()) return -1;
    *on = PyObject_IsTrue(flag);
    return *on < 0 ? -1 : 0;
}

/* Written as branch-free loops (fabs and selects, not ifs on signs: a branch on the sign of
 * random utilities mispredicts half the time) so that the compiler vectorises them. */
#define DEFINE_REGRET_MATCHING(NAME, T, EPS, ABS)                                                   \
    static int NAME(const T *restrict u, const T *restrict x, T *restrict q, T *restrict out,  \
                    Py_ssize_t rows, Py_ssize_t n, double discount, int predictive) {          \
        const T d = (T)discount;                                                               \
        const int discounted = discount != 1.0;                                                \
        for (Py_ssize_t b = 0; b < rows; b++, u += n, x += n, q += n, out += n) {              \
            /* max |u| (skips a nan) and <u, x> (nan or inf when some u is: inf * 0 is nan,    \
             * and x >= 0 sums to 1): the two together see every non-finite u */               \
            T m0 = (T)0, m1 = (T)0, m2 = (T)0, m3 = (T)0;                                      \
            double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;                                     \
            Py_ssize_t i = 0;                                                                  \
            /* one pass: four partial maxima and sums, no dependency chain */                  \
            for (i = 0; i + 4 <= n; i += 4) {                                                  \
                T a0 = ABS(u[i]), a1 = ABS(u[i + 1]), a2 = ABS(u[i + 2]), a3 = ABS(u[i + 3]);  \
                m0 = a0 > m0 ? a0 : m0;                                                        \
                m1 = a1 > m1 ? a1 : m1;                                                        \
                m2 = a2 > m2 ? a2 : m2;                                                        \
                m3 = a3 > m3 ? a3 : m3;                                                        \
                s0 += (double)u[i] * (double)x[i];                                             \
                s1 += (double)u[i + 1] * (double)x[i + 1];                                     \
                s2 += (double)u[i + 2] * (double)x[i + 2];                                     \
                s3 += (double)u[i + 3] * (double)x[i + 3];                                     \
            }                                                                                  \
            for (; i < n; i++) {                                                               \
                m0 = ABS(u[i]) > m0 ? ABS(u[i]) : m0;                                          \
                s0 += (double)u[i] * (double)x[i];                                             \
            }                                                                                  \
            m0 = m1 > m0 ? m1 : m0;                                                            \
            m2 = m3 > m2 ? m3 : m2;                                                            \
            const T size = m2 > m0 ? m2 : m0;                                                  \
            const double dot = (s0 + s1) + (s2 + s3);                                          \
            if (!isfinite(dot) || !isfinite((double)size)) return 1;                           \
            const T value = (T)dot;                                                            \
            /* numpy compares a float32 regret with the threshold rounded to float32 too */    \
            const T noise = (T)(16.0 * (EPS) * (double)size);                                  \
            for (i = 0; i < n; i++) {                                                          \
                T r = u[i] - value;                                                            \
                r = ABS(r) <= noise ? (T)0 : r;                                                \
                T qi = (discounted ? d * q[i] : q[i]) + r;                                     \
                qi = qi > (T)0 ? qi : (T)0;                                                    \
                q[i] = qi;                                                                     \
                T p = qi + r;                                                                  \
                p = p > (T)0 ? p : (T)0;                                                       \
                out[i] = predictive ? p : qi;                                                  \
            }                                                                                  \
            s0 = s1 = s2 = s3 = 0.0;                                                           \
            for (i = 0; i + 4 <= n; i += 4) {                                                  \
                s0 += (double)out[i];                                                          \
                s1 += (double)out[i + 1];                                                      \
                s2 += (double)out[i + 2];                                                      \
                s3 += (double)out[i + 3];                                                      \
            }                                                                                  \
            for (; i < n; i++) s0 += (double)out[i];                                           \
            const T total = (T)((s0 + s1) + (s2 + s3));                                        \
            if (total > (T)0) {                                                                \
                for (i = 0; i < n; i++) out[i] = out[i] / total;                               \
            } else {                                                                           \
                memcpy(out, x, (size_t)n * sizeof(T));                                         \
            }                                                                                  \
        }                                                                                      \
        return 0;                                                                              \
    }

DEFINE_REGRET_MATCHING(regret_matching_d, double, DBL_EPSILON, fabs)
DEFINE_REGRET_MATCHING(regret_matching_f, float, FLT_EPSILON, fabsf)

static PyObject *regret_matching(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "regret_matching(u, x, q, out, discount, predictive)");
        return NULL;
    }
    double discount;
    int predictive;
    if (parse_param_flag(args[4], args[5], &discount, &predictive) < 0) return NULL;
    Py_buffer v[4];
    static const int writable[4] = {0, 0, 1, 1};
    Py_ssize_t n, size, rows;
    int kind = take_rows(args, writable, 4, v, &n, &size, &rows);
    if (kind < 0) return NULL;
    int status;
    if (kind == 8)
        status = regret_matching_d(v[0].buf, v[1].buf, v[2].buf, v[3].buf, rows, n, discount,
                                   predictive);
    else
        status = regret_matching_f(v[0].buf, v[1].buf, v[2].buf, v[3].buf, rows, n, discount,
                                   predictive);
    release(v, 4);
    return PyLong_FromLong(status);
}

/* xs += w * x and us += w * u; returns max(us) and, where u_max is not NULL, stores max(u) there
 * (play's gap of the iterate just played; the maxima are exact, so the caller's sum of two of
 * them rounds as numpy's would). */
#define DEFINE_ACCUMULATE(NAME, T)                                                             \
    static double NAME(T w, const T *restrict x, T *restrict xs, Py_ssize_t nx,                \
                       const T *restrict u, T *restrict us, Py_ssize_t nu,                     \
                       double *u_max) {                                                        \
        for (Py_ssize_t i = 0; i < nx; i++) {                                                  \
            T t = w * x[i];                                                                    \
            xs[i] = xs[i] + t;                                                                 \
        }                                                                                      \
        if (nu == 0) {                                                                         \
            if (u_max != NULL) *u_max = -INFINITY;                                             \
            return -INFINITY;                                                                  \
        }                                                                                      \
        for (Py_ssize_t i = 0; i < nu; i++) {                                                  \
            T t = w * u[i];                                                                    \
            us[i] = us[i] + t;                                                                 \
        }                                                                                      \
        T m0 = us[0], m1 = us[0], m2 = us[0], m3 = us[0];                                      \
        Py_ssize_t i = 0;                                                                      \
        for (; i + 4 <= nu; i += 4) { /* four partial maxima: no dependency chain */           \
            m0 = us[i] > m0 ? us[i] : m0;                                                      \
            m1 = us[i + 1] > m1 ? us[i + 1] : m1;                                              \
            m2 = us[i + 2] > m2 ? us[i + 2] : m2;                                              \
            m3 = us[i + 3] > m3 ? us[i + 3] : m3;                                              \
        }                                                                                      \
        for (; i < nu; i++) m0 = us[i] > m0 ? us[i] : m0;                                      \
        m0 = m1 > m0 ? m1 : m0;                                                                \
        m2 = m3 > m2 ? m3 : m2;                                                                \
        if (u_max != NULL) {                                                                   \
            T a0 = u[0], a1 = u[0], a2 = u[0], a3 = u[0];                                      \
            for (i = 0; i + 4 <= nu; i += 4) {                                                 \
                a0 = u[i] > a0 ? u[i] : a0;                                                    \
                a1 = u[i + 1] > a1 ? u[i + 1] : a1;                                            \
                a2 = u[i + 2] > a2 ? u[i + 2] : a2;                                            \
                a3 = u[i + 3] > a3 ? u[i + 3] : a3;                                            \
            }                                                                                  \
            for (; i < nu; i++) a0 = u[i] > a0 ? u[i] : a0;                                    \
            a0 = a1 > a0 ? a1 : a0;                                                            \
            a2 = a3 > a2 ? a3 : a2;                                                            \
            *u_max = (double)(a2 > a0 ? a2 : a0);                                              \
        }                                                                                      \
        return (double)(m2 > m0 ? m2 : m0);                                                    \
    }

DEFINE_ACCUMULATE(accumulate_d, double)
DEFINE_ACCUMULATE(accumulate_f, float)

static PyObject *accumulate(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "accumulate(w, x, x_sum, u, u_sum)");
        return NULL;
    }
    double w = PyFloat_AsDouble(args[0]);
    if (w == -1.0 && PyErr_Occurred()) return NULL;
    Py_buffer v[4];
    static const int writable[4] = {0, 1, 0, 1};
    int kind = take(args + 1, writable, 4, v);
    if (kind < 0) return NULL;
    if (!same_shape(&v[0], &v[1]) || !same_shape(&v[2], &v[3])) {
        release(v, 4);
        PyErr_SetString(PyExc_ValueError, "gpo_core._kernels: arrays of different shapes");
        return NULL;
    }
    Py_ssize_t nx = v[0].len / v[0].itemsize, nu = v[2].len / v[2].itemsize;
    double top;
    if (kind == 8)
        top = accumulate_d(w, v[0].buf, v[1].buf, nx, v[2].buf, v[3].buf, nu, NULL);
    else
        top = accumulate_f((float)w, v[0].buf, v[1].buf, nx, v[2].buf, v[3].buf, nu, NULL);
    release(v, 4);
    return PyFloat_FromDouble(top);
}

/* The scalars of play's fused calls: a float parameter, a flag and the average's weight w. */
static int parse_step_scalars(PyObject *a, PyObject *flag, PyObject *weight, double *value,
                              int *on, double *w) {
    if (parse_param_flag(a, flag, value, on) < 0) return -1;
    *w = PyFloat_AsDouble(weight);
    if (*w == -1.0 && PyErr_Occurred()) return -1;
    return 0;
}

/* step(u, x, q, out, discount, predictive, w, x_sum, acc, acc_sum) -> (float, float):
 * regret_matching on (u, x, q, out), then accumulate(w, x, x_sum, acc, acc_sum), in one call:
 * play's step for one player, with x the strategy just played (still in the cache). Returns
 * (max(acc_sum), max(acc)), or (nan, nan) (and nothing accumulated) when u is not finite. */
/* accumulate for a batch of rows of n actions: xs += w * x and us += w * u, and each row's
 * max(us) and max(u) into tops and nows, in one pass over u and us. */
#define DEFINE_ACCUMULATE_ROWS(NAME, T)                                                        \
    static void NAME(T w, const T *restrict x, T *restrict xs, const T *restrict u,            \
                     T *restrict us, Py_ssize_t rows, Py_ssize_t n, T *restrict tops,          \
                     T *restrict nows) {                                                       \
        for (Py_ssize_t i = 0; i < rows * n; i++) {                                            \
            T t = w * x[i];                                                                    \
            xs[i] = xs[i] + t;                                                                 \
        }                                                                                      \
        for (Py_ssize_t b = 0; b < rows; b++, us += n, u += n) {                               \
            T m = -(T)INFINITY, a = -(T)INFINITY;                                              \
            for (Py_ssize_t i = 0; i < n; i++) {                                               \
                T t = w * u[i];                                                                \
                T s = us[i] + t;                                                               \
                us[i] = s;                                                                     \
                m = s > m ? s : m;                                                             \
                a = u[i] > a ? u[i] : a;                                                       \
            }                                                                                  \
            tops[b] = m;                                                                       \
            nows[b] = a;                                                                       \
        }                                                                                      \
    }

DEFINE_ACCUMULATE_ROWS(accumulate_rows_d, double)
DEFINE_ACCUMULATE_ROWS(accumulate_rows_f, float)

/* The optional per-game maxima outputs of step: two writable buffers of the kind of the others
 * with one entry per row; 0, or -1 with an exception set and nothing held. */
static int take_row_outputs(PyObject *const *objs, int kind, Py_ssize_t rows, Py_buffer *views) {
    static const int writable[2] = {1, 1};
    int got = take(objs, writable, 2, views);
    if (got < 0) return -1;
    if (got != kind || views[0].len / views[0].itemsize != rows ||
        views[1].len / views[1].itemsize != rows) {
        release(views, 2);
        PyErr_SetString(PyExc_ValueError,
                        "gpo_core._kernels: tops and nows need one entry per game, in the dtype");
        return -1;
    }
    return 0;
}

/* The running sums of play's fused calls, v = (x, x_sum, acc, acc_sum): for one game returns
 * max(acc_sum) and stores max(acc) in *acc_top; with per-row outputs r (a batch) writes each
 * row's maxima into r[0] and r[1] and returns 0.0 (and *acc_top = 0.0). */
static double sums(int kind, double w, const Py_buffer *v, Py_ssize_t size, Py_ssize_t rows,
                   Py_ssize_t n, const Py_buffer *r, double *acc_top) {
    if (r != NULL) {
        if (kind == 8)
            accumulate_rows_d(w, v[0].buf, v[1].buf, v[2].buf, v[3].buf, rows, n, r[0].buf,
                              r[1].buf);
        else
            accumulate_rows_f((float)w, v[0].buf, v[1].buf, v[2].buf, v[3].buf, rows, n,
                              r[0].buf, r[1].buf);
        *acc_top = 0.0;
        return 0.0;
    }
    if (kind == 8)
        return accumulate_d(w, v[0].buf, v[1].buf, size, v[2].buf, v[3].buf, size, acc_top);
    return accumulate_f((float)w, v[0].buf, v[1].buf, size, v[2].buf, v[3].buf, size, acc_top);
}

static PyObject *step(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 10 && nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "step(u, x, q, out, discount, predictive, w, x_sum, "
                                         "acc, acc_sum[, tops, nows])");
        return NULL;
    }
    double discount, w;
    int predictive;
    if (parse_step_scalars(args[4], args[5], args[6], &discount, &predictive, &w) < 0) return NULL;
    /* u, q, out, then x, x_sum, acc, acc_sum (the sums' four, in a row) */
    PyObject *objs[7] = {args[0], args[2], args[3], args[1], args[7], args[8], args[9]};
    Py_buffer v[7];
    static const int writable[7] = {0, 1, 1, 0, 1, 0, 1};
    Py_ssize_t n, size, rows;
    int kind = take_rows(objs, writable, 7, v, &n, &size, &rows);
    if (kind < 0) return NULL;
    Py_buffer r[2];
    int per_row = nargs == 12;
    if (per_row && take_row_outputs(args + 10, kind, rows, r) < 0) {
        release(v, 7);
        return NULL;
    }
    double top = NAN, acc_top = NAN; /* (0.0, 0.0) with per-row outputs, once stepped */
    int bad = kind == 8 ? regret_matching_d(v[0].buf, v[3].buf, v[1].buf, v[2].buf, rows, n,
                                            discount, predictive)
                        : regret_matching_f(v[0].buf, v[3].buf, v[1].buf, v[2].buf, rows, n,
                                            discount, predictive);
    if (!bad) top = sums(kind, w, v + 3, size, rows, n, per_row ? r : NULL, &acc_top);
    release(v, 7);
    if (per_row) release(r, 2);
    return Py_BuildValue("(dd)", top, acc_top);
}

/* exp(a) for a <= 0, with 0 returned directly where exp rounds to 0 anyway (below ln of half
 * the smallest subnormal: -745.13 in double, -103.97 in float): libm's underflow path costs
 * several times a normal exp, and a concentrated Hedge strategy has many such entries. */
static inline double exp0_d(double a) { return a < -745.2 ? 0.0 : exp(a); }
static inline float exp0_f(float a) { return a < -104.0f ? 0.0f : expf(a); }

/* Vector exp for Hedge's exp pass: glibc's libmvec (_ZGVdN4v_exp, _ZGVdN8v_expf; AVX2), at
 * glibc documents within 4 ulp of the scalar exp (tests/test_kernels.py checks the strategies;
 * benchmarks/bench_exp.py times the step with each: 0.35-0.75x on this machine). It is found
 * by gpo_core/_fused.py through ctypes and handed over with vector_exp(): the module has no
 * link-time dependency on it, so it builds and loads where there is none (then exp0 runs).
 * Which exp an entry gets depends only on its position in its row and the row's length, so a
 * game alone and the same game inside a batch still give the same bits. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define GPO_VECTOR_EXP 1
typedef __m256d (*vexp_d_fn)(__m256d);
typedef __m256 (*vexp_f_fn)(__m256);
static vexp_d_fn vexp_d = NULL;
static vexp_f_fn vexp_f = NULL;

/* p[i] = exp0(z[i] - top) for i < the returned count (a multiple of 4), adding p[i + k] to
 * s[k]: the scalar loop's four partial sums, in its order. */
__attribute__((target("avx2"))) static Py_ssize_t exp_rows_d(const double *z, double top,
                                                             double *p, Py_ssize_t n,
                                                             double *s) {
    __m256d acc = _mm256_loadu_pd(s);
    const __m256d t = _mm256_set1_pd(top), low = _mm256_set1_pd(-745.2);
    const __m256d zero = _mm256_setzero_pd();
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m256d a = _mm256_sub_pd(_mm256_loadu_pd(z + i), t);
        __m256d under = _mm256_cmp_pd(a, low, _CMP_LT_OQ); /* exp0's shortcut: 0 exactly */
        __m256d e = _mm256_blendv_pd(vexp_d(_mm256_blendv_pd(a, zero, under)), zero, under);
        _mm256_storeu_pd(p + i, e);
        acc = _mm256_add_pd(acc, e);
    }
    _mm256_storeu_pd(s, acc);
    return i;
}

/* The same for float, 8 at a time: the low four lanes, then the high four, go to s[0..3] in
 * double, as the scalar loop's two blocks of four would. */
__attribute__((target("avx2"))) static Py_ssize_t exp_rows_f(const float *z, float top,
                                                             float *p, Py_ssize_t n,
                                                             double *s) {
    __m256d acc = _mm256_loadu_pd(s);
    const __m256 t = _mm256_set1_ps(top), low = _mm256_set1_ps(-104.0f);
    const __m256 zero = _mm256_setzero_ps();
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 a = _mm256_sub_ps(_mm256_loadu_ps(z + i), t);
        __m256 under = _mm256_cmp_ps(a, low, _CMP_LT_OQ);
        __m256 e = _mm256_blendv_ps(vexp_f(_mm256_blendv_ps(a, zero, under)), zero, under);
        _mm256_storeu_ps(p + i, e);
        acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    _mm256_storeu_pd(s, acc);
    return i;
}
#define EXP_ROWS_d(z, top, p, n, s) (vexp_d != NULL ? exp_rows_d(z, top, p, n, s) : 0)
#define EXP_ROWS_f(z, top, p, n, s) (vexp_f != NULL ? exp_rows_f(z, top, p, n, s) : 0)
#else
#define EXP_ROWS_d(z, top, p, n, s) 0
#define EXP_ROWS_f(z, top, p, n, s) 0
#endif

/* vector_exp(address_d, address_f) -> bool: use the vector exps at these addresses (of
 * _ZGVdN4v_exp and _ZGVdN8v_expf), or none when either is 0 or this CPU lacks AVX2; returns
 * whether they are used. */
static PyObject *vector_exp(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "vector_exp(address_d, address_f)");
        return NULL;
    }
    size_t addr[2];
    for (int k = 0; k < 2; k++) {
        addr[k] = PyLong_AsSize_t(args[k]);
        if (addr[k] == (size_t)-1 && PyErr_Occurred()) return NULL;
    }
#ifdef GPO_VECTOR_EXP
    __builtin_cpu_init();
    int on = addr[0] != 0 && addr[1] != 0 && __builtin_cpu_supports("avx2");
    vexp_d = on ? (vexp_d_fn)addr[0] : NULL;
    vexp_f = on ? (vexp_f_fn)addr[1] : NULL;
    return PyBool_FromLong(on);
#else
    return PyBool_FromLong(0);
#endif
}

/* Hedge's step on each row: cum' = cum + u; zn = base + eta * (ftrl ? cum' : u) (the KL-proximal
 * form from the current logits, or dual averaging from the prior); or, given a log-magnet m
 * (then cum and cum_out are NULL), MMD's zn = ((base + k * m) + eta * u) / d with k = eta * alpha
 * and d = 1 + eta * alpha, as rules._mirror_step rounds it. Then with top = max(zn) and
 * e = exp(zn - top): z' = zn - (log(sum e) + top), p = e / sum(e). One exp pass where numpy's
 * log_softmax and softmax take two; the same roundings as numpy in every elementwise operation
 * (sum(e) in double with four partial sums). Returns 1 if some u is not finite (arrays partly
 * written), else 0. */
#define DEFINE_HEDGE(NAME, T, EXP0, LOG, EXP_ROWS)                                              \
    static int NAME(const T *restrict u_all, const T *restrict base_all,                      \
                    const T *restrict cum_all, const T *restrict m_all, T *restrict z_all,    \
                    T *restrict p_all, T *restrict cum_out_all, Py_ssize_t rows,              \
                    Py_ssize_t n, double eta_d, int ftrl, double k_d, double d_d) {           \
        const T eta = (T)eta_d, k = (T)k_d, d = (T)d_d;                                        \
        for (Py_ssize_t b = 0; b < rows; b++) {                                                \
            const T *u = u_all + b * n, *base = base_all + b * n;                              \
            T *z = z_all + b * n, *p = p_all + b * n;                                          \
            double check = 0.0; /* u * 0 is nan exactly where u is inf or nan */               \
            T top = -(T)INFINITY;                                                              \
            if (m_all != NULL) {                                                               \
                const T *m = m_all + b * n;                                                    \
                for (Py_ssize_t i = 0; i < n; i++) {                                           \
                    check += (double)u[i] * 0.0;                                               \
                    T a = base[i] + k * m[i];                                                  \
                    T zi = (a + eta * u[i]) / d;                                               \
                    z[i] = zi;                                                                 \
                    top = zi > top ? zi : top;                                                 \
                }                                                                              \
            } else {                                                                           \
                const T *cum = cum_all + b * n;                                                \
                T *cum_out = cum_out_all + b * n;                                              \
                for (Py_ssize_t i = 0; i < n; i++) {                                           \
                    check += (double)u[i] * 0.0;                                               \
                    T c = cum[i] + u[i];                                                       \
                    cum_out[i] = c;                                                            \
                    T step = eta * (ftrl ? c : u[i]);                                          \
                    T zi = base[i] + step;                                                     \
                    z[i] = zi;                                                                 \
                    top = zi > top ? zi : top;                                                 \
                }                                                                              \
            }                                                                                  \
            if (check != 0.0) return 1;                                                        \
            double s[4] = {0.0, 0.0, 0.0, 0.0};                                                \
            Py_ssize_t i = EXP_ROWS(z, top, p, n, s); /* the vector exp's share, or none */    \
            double s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3];                                 \
            for (; i + 4 <= n; i += 4) {                                                       \
                T e0 = EXP0(z[i] - top), e1 = EXP0(z[i + 1] - top);                            \
                T e2 = EXP0(z[i + 2] - top), e3 = EXP0(z[i + 3] - top);                        \
                p[i] = e0, p[i + 1] = e1, p[i + 2] = e2, p[i + 3] = e3;                        \
                s0 += (double)e0, s1 += (double)e1, s2 += (double)e2, s3 += (double)e3;        \
            }                                                                                  \
            for (; i < n; i++) {                                                               \
                T e = EXP0(z[i] - top);                                                        \
                p[i] = e;                                                                      \
                s0 += (double)e;                                                               \
            }                                                                                  \
            const T total = (T)((s0 + s1) + (s2 + s3)); /* >= 1: the top entry's exp(0) */     \
            const T shift = LOG(total) + top;                                                  \
            for (i = 0; i < n; i++) {                                                          \
                z[i] = z[i] - shift;                                                           \
                p[i] = p[i] / total;                                                           \
            }                                                                                  \
        }                                                                                      \
        return 0;                                                                              \
    }

DEFINE_HEDGE(hedge_d, double, exp0_d, log, EXP_ROWS_d)
DEFINE_HEDGE(hedge_f, float, exp0_f, logf, EXP_ROWS_f)

static PyObject *hedge(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "hedge(u, base, cum, z_out, p_out, cum_out, eta, ftrl)");
        return NULL;
    }
    double eta;
    int ftrl;
    if (parse_param_flag(args[6], args[7], &eta, &ftrl) < 0) return NULL;
    Py_buffer v[6];
    static const int writable[6] = {0, 0, 0, 1, 1, 1};
    Py_ssize_t n, size, rows;
    int kind = take_rows(args, writable, 6, v, &n, &size, &rows);
    if (kind < 0) return NULL;
    int status;
    if (kind == 8)
        status = hedge_d(v[0].buf, v[1].buf, v[2].buf, NULL, v[3].buf, v[4].buf, v[5].buf, rows,
                         n, eta, ftrl, 0.0, 1.0);
    else
        status = hedge_f(v[0].buf, v[1].buf, v[2].buf, NULL, v[3].buf, v[4].buf, v[5].buf, rows,
                         n, eta, ftrl, 0.0, 1.0);
    release(v, 6);
    return PyLong_FromLong(status);
}

/* hedge_step(u, base, cum, z_out, p_out, cum_out, eta, ftrl, w, x, x_sum, acc, acc_sum)
 * -> (float, float): hedge on (u, base, cum, z_out, p_out, cum_out), then accumulate(w, x,
 * x_sum, acc, acc_sum) with x the strategy just played: play's Hedge step for one player in one
 * call. Returns (max(acc_sum), max(acc)), or (nan, nan) (nothing accumulated) when u is not
 * finite. */
static PyObject *hedge_step(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 13 && nargs != 15) {
        PyErr_SetString(PyExc_TypeError, "hedge_step(u, base, cum, z_out, p_out, cum_out, eta, "
                                         "ftrl, w, x, x_sum, acc, acc_sum[, tops, nows])");
        return NULL;
    }
    double eta, w;
    int ftrl;
    if (parse_step_scalars(args[6], args[7], args[8], &eta, &ftrl, &w) < 0) return NULL;
    PyObject *objs[10] = {args[0], args[1], args[2], args[3], args[4],
                          args[5], args[9], args[10], args[11], args[12]};
    Py_buffer v[10];
    static const int writable[10] = {0, 0, 0, 1, 1, 1, 0, 1, 0, 1};
    Py_ssize_t n, size, rows;
    int kind = take_rows(objs, writable, 10, v, &n, &size, &rows);
    if (kind < 0) return NULL;
    Py_buffer r[2];
    int per_row = nargs == 15;
    if (per_row && take_row_outputs(args + 13, kind, rows, r) < 0) {
        release(v, 10);
        return NULL;
    }
    double top = NAN, acc_top = NAN;
    int bad = kind == 8 ? hedge_d(v[0].buf, v[1].buf, v[2].buf, NULL, v[3].buf, v[4].buf,
                                  v[5].buf, rows, n, eta, ftrl, 0.0, 1.0)
                        : hedge_f(v[0].buf, v[1].buf, v[2].buf, NULL, v[3].buf, v[4].buf,
                                  v[5].buf, rows, n, eta, ftrl, 0.0, 1.0);
    if (!bad) top = sums(kind, w, v + 6, size, rows, n, per_row ? r : NULL, &acc_top);
    release(v, 10);
    if (per_row) release(r, 2);
    return Py_BuildValue("(dd)", top, acc_top);
}

/* The three floats of MMD's step: eta, k = eta * alpha and d = 1 + eta * alpha. */
static int parse_mirror_scalars(PyObject *const *args, double *out) {
    for (int j = 0; j < 3; j++) {
        out[j] = PyFloat_AsDouble(args[j]);
        if (out[j] == -1.0 && PyErr_Occurred()) return -1;
    }
    return 0;
}

/* mirror(u, base, m, z_out, p_out, eta, k, d) -> int: MMD's step on each row (see DEFINE_HEDGE):
 * the new normalised logits z_out and the strategy p_out from the logits base and the
 * log-magnet m. Returns 0, or 1 if some row of u is not finite. */
static PyObject *mirror(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "mirror(u, base, m, z_out, p_out, eta, k, d)");
        return NULL;
    }
    double c[3];
    if (parse_mirror_scalars(args + 5, c) < 0) return NULL;
    Py_buffer v[5];
    static const int writable[5] = {0, 0, 0, 1, 1};
    Py_ssize_t n, size, rows;
    int kind = take_rows(args, writable, 5, v, &n, &size, &rows);
    if (kind < 0) return NULL;
    int status = kind == 8 ? hedge_d(v[0].buf, v[1].buf, NULL, v[2].buf, v[3].buf, v[4].buf,
                                     NULL, rows, n, c[0], 0, c[1], c[2])
                           : hedge_f(v[0].buf, v[1].buf, NULL, v[2].buf, v[3].buf, v[4].buf,
                                     NULL, rows, n, c[0], 0, c[1], c[2]);
    release(v, 5);
    return PyLong_FromLong(status);
}

/* mirror_step(u, base, m, z_out, p_out, eta, k, d, w, x, x_sum, acc, acc_sum[, tops, nows])
 * -> (float, float): mirror, then accumulate(w, x, x_sum, acc, acc_sum), as hedge_step. */
static PyObject *mirror_step(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 13 && nargs != 15) {
        PyErr_SetString(PyExc_TypeError, "mirror_step(u, base, m, z_out, p_out, eta, k, d, w, "
                                         "x, x_sum, acc, acc_sum[, tops, nows])");
        return NULL;
    }
    double c[4];
    if (parse_mirror_scalars(args + 5, c) < 0) return NULL;
    c[3] = PyFloat_AsDouble(args[8]);
    if (c[3] == -1.0 && PyErr_Occurred()) return NULL;
    PyObject *objs[9] = {args[0], args[1], args[2], args[3], args[4],
                         args[9], args[10], args[11], args[12]};
    Py_buffer v[9];
    static const int writable[9] = {0, 0, 0, 1, 1, 0, 1, 0, 1};
    Py_ssize_t n, size, rows;
    int kind = take_rows(objs, writable, 9, v, &n, &size, &rows);
    if (kind < 0) return NULL;
    Py_buffer r[2];
    int per_row = nargs == 15;
    if (per_row && take_row_outputs(args + 13, kind, rows, r) < 0) {
        release(v, 9);
        return NULL;
    }
    double top = NAN, acc_top = NAN;
    int bad = kind == 8 ? hedge_d(v[0].buf, v[1].buf, NULL, v[2].buf, v[3].buf, v[4].buf, NULL,
                                  rows, n, c[0], 0, c[1], c[2])
                        : hedge_f(v[0].buf, v[1].buf, NULL, v[2].buf, v[3].buf, v[4].buf, NULL,
                                  rows, n, c[0], 0, c[1], c[2]);
    if (!bad) top = sums(kind, c[3], v + 5, size, rows, n, per_row ? r : NULL, &acc_top);
    release(v, 9);
    if (per_row) release(r, 2);
    return Py_BuildValue("(dd)", top, acc_top);
}

static PyMethodDef methods[] = {
    {"mirror_step", (PyCFunction)(void (*)(void))mirror_step, METH_FASTCALL,
     "mirror_step(u, base, m, z_out, p_out, eta, k, d, w, x, x_sum, acc, acc_sum[, tops, nows])"
     " -> (max(acc_sum), max(acc))"},
    {"mirror", (PyCFunction)(void (*)(void))mirror, METH_FASTCALL,
     "mirror(u, base, m, z_out, p_out, eta, k, d) -> 0, or 1 for non-finite u"},
    {"hedge_step", (PyCFunction)(void (*)(void))hedge_step, METH_FASTCALL,
     "hedge_step(u, base, cum, z_out, p_out, cum_out, eta, ftrl, w, x, x_sum, acc, acc_sum"
     "[, tops, nows]) -> (max(acc_sum), max(acc))"},
    {"hedge", (PyCFunction)(void (*)(void))hedge, METH_FASTCALL,
     "hedge(u, base, cum, z_out, p_out, cum_out, eta, ftrl) -> 0, or 1 for non-finite u"},
    {"vector_exp", (PyCFunction)(void (*)(void))vector_exp, METH_FASTCALL,
     "vector_exp(address_d, address_f) -> whether Hedge's exp pass uses these vector exps"},
    {"regret_matching", (PyCFunction)(void (*)(void))regret_matching, METH_FASTCALL,
     "regret_matching(u, x, q, out, discount, predictive) -> 0, or 1 for non-finite u"},
    {"accumulate", (PyCFunction)(void (*)(void))accumulate, METH_FASTCALL,
     "accumulate(w, x, x_sum, u, u_sum) -> max(u_sum)"},
    {"step", (PyCFunction)(void (*)(void))step, METH_FASTCALL,
     "step(u, x, q, out, discount, predictive, w, x_sum, acc, acc_sum[, tops, nows]) "
     "-> (max(acc_sum), max(acc))"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "gpo_core._kernels",
    "Fused per-step kernels of gpo_core (optional; see gpo_core/_fused.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
