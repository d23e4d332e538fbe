// The speculation gate: speculative decoding only where it wins. The engine keeps running estimates (EWMA) of
// what a target step (its decode, then sampling each row) costs as a function of its rows (buckets of powers of two: the extra rows of drafts are
// nearly free while decoding is memory-bound, few sequences, and cost real time when it is compute-bound), of
// what the draft model's drafting costs a step (both per engine: they are the machine's), and, per sequence
// and kind of draft, of the chance that a drafted token is accepted (per request: a free-form answer's
// acceptance says nothing about the code rewrite that follows it). A lookup draft is cut to the length that
// is expected to give the most tokens per unit of time. Before a step's drafts are verified, each
// sequence's draft of each kind (prompt lookup's, then the draft model's) is kept only when the tokens
// expected per unit of time beat the step without it; with hysteresis, and a re-probe now and then (its
// interval doubling while probes lose) so that a change of phase is noticed. The gate only decides whether
// to draft: what a sequence outputs is the same either way.
//
// pw_engine_params.spec_gate 0 drafts whenever a sequence asks (no gate); 2 fixes the costs (target step:
// spec_step_us + spec_row_us per row; spec_draft_us a step of the draft model) instead of measuring them, for
// tests (a3s-power's setting spec_costs, A3S_POWER_SPEC_COSTS).

#include "shim.h"

#include <algorithm>
#include <cmath>

namespace shim {

namespace {

constexpr double kAlpha = 0.25;       // EWMA weight of a new sample
constexpr double kHysteresis = 0.05;  // an off kind turns on only when it wins by this much
constexpr int32_t kProbeMin = 16, kProbeMax = 512;
// While drafting, a step without drafts keeps that cost measured: after 8 << n engine steps for a size measured n
// times, at most kRefresh (engine-wide: a request shorter than that must not keep the size measured once, at
// a cold start, for good).
constexpr int32_t kRefresh = 256;
// The chance that a drafted token is accepted starts at kPrior (one rejected draft does not end drafting),
// its counts decaying by kDecay a draft (a rewrite's copied stretches and its edits come in phases); a draft
// is worth its rows only where that chance is at least kMinShare and it is expected to add at least kMinGain
// tokens.
constexpr double kPrior = 0.5, kDecay = 0.75, kMinShare = 0.05, kMinGain = 0.05;

void ewma(double &v, int32_t &n, double x) {
    v = n == 0 ? x : v + kAlpha * (x - v);
    if (n < 1 << 30) n++;
}

constexpr int32_t kBuckets = spec_gate::kBuckets;

int32_t bucket(int32_t rows) {
    int32_t b = 0;
    while (b + 1 < kBuckets && (1 << b) < rows) b++;
    return b;
}

// The expected cost of a target decode of `rows` rows, or < 0 when nothing is known yet.
double step_cost(const spec_gate &g, int32_t rows) {
    if (g.fixed) return g.fix_step_us + g.fix_row_us * rows;
    const int32_t b = bucket(rows);
    double t = -1.0;
    if (g.n_step[b] > 0) {
        t = g.t_step[b];
    } else {
        // Unmeasured: as the nearest smaller measured size (optimistic, so that a probe measures it).
        for (int32_t i = b - 1; i >= 0 && t < 0.0; i--)
            if (g.n_step[i] > 0) t = g.t_step[i];
    }
    // A decode costs at most in proportion to its rows, and at most what a measured decode of more rows
    // costs: an estimate above either is noise (a busy machine, a cold start), and would make drafts
    // accepted in full look as if they could not pay, or a step without drafts look dearer than with them.
    for (int32_t i = 0; i < kBuckets && t >= 0.0; i++) {
        if (g.n_step[i] == 0 || i == b) continue;
        t = std::min(t, i < b ? g.t_step[i] * rows / g.rows_step[i] : g.t_step[i]);
    }
    return t;
}

// The cost of a step of `rows` rows (without this draft) measured long enough ago to measure again.
bool stale(const spec_gate &g, int32_t rows) {
    if (g.fixed) return false;
    const int32_t b = bucket(rows), n = g.n_step[b];
    return n > 0 && g.n_steps - g.at_step[b] >= (n >= 5 ? kRefresh : std::min(kRefresh, 8 << n));
}

}  // namespace

void gate_init(spec_gate &g, const pw_engine_params &p) {
    g = spec_gate{};
    g.off = p.spec_gate == 0;
    g.fixed = p.spec_gate == 2;
    g.fix_step_us = p.spec_step_us;
    g.fix_row_us = p.spec_row_us;
    g.fix_draft_us = p.spec_draft_us;
}

void gate_reset(spec_est (&est)[2]) {
    for (auto &k : est) {
        k = spec_est{};
        k.probe_every = kProbeMin;
    }
}

void gate_step_measured(spec_gate &g, int32_t rows, int64_t us) {
    if (rows <= 0) return;
    const int32_t b = bucket(rows);
    g.n_steps++;
    g.at_step[b] = g.n_steps;
    double x = (double)us;
    if (g.n_step[b] == 1) {
        // A size's first step (its graph new, the weights perhaps not yet in memory: the warm-up's first
        // decode has measured twenty times the next) is no measure of the ones after it: the second replaces it.
        g.t_step[b] = x;
        g.rows_step[b] = (double)rows;
        g.n_step[b] = 2;
        return;
    }
    // One step slowed down (or sped up) by something else on the machine moves the estimate a bounded step.
    if (g.n_step[b] > 0) x = std::min(std::max(x, 0.5 * g.t_step[b]), 2.0 * g.t_step[b]);
    int32_t n = g.n_step[b];
    ewma(g.rows_step[b], n, (double)rows);
    ewma(g.t_step[b], g.n_step[b], x);
}

void gate_draft_measured(spec_gate &g, int64_t us) { ewma(g.t_draft, g.n_draft, (double)us); }

void gate_accepted(spec_est &k, int32_t n_draft, int32_t n_accepted) {
    if (k.n_acc == 0) {  // the first draft moves it from kPrior, as every later one
        k.n_ok = kPrior;
        k.n_miss = 1.0 - kPrior;
    }
    k.n_ok = kDecay * k.n_ok + n_accepted;
    k.n_miss = kDecay * k.n_miss + (n_accepted < n_draft || n_draft == 0 ? 1.0 : 0.0);
    k.acc = k.n_ok / (k.n_ok + k.n_miss);
    if (k.n_acc < 1 << 30) k.n_acc++;
}

bool gate_allows(spec_gate &g, spec_est &k, int kind, int32_t rows, double tokens, int32_t draft_rows,
                 bool pays_draft) {
    if (g.off || draft_rows == 0) return true;
    const double t0 = step_cost(g, rows), t1 = step_cost(g, rows + draft_rows);
    double td = 0.0;
    if (kind == GATE_MODEL && pays_draft) td = g.fixed ? g.fix_draft_us : g.n_draft > 0 ? g.t_draft : -1.0;
    if (t0 < 0.0 || stale(g, rows)) return false;  // the step without drafts unmeasured or stale: one such step
    // Where even a draft accepted in full would lose (a draft model as dear as the target, a compute-bound
    // batch), acceptance cannot change that: probes only seldom, and a new request does not start with one
    // (the draft model would first catch up on the whole prompt). Measured costs must say so clearly: at
    // break-even they may be an artefact of a busy machine (the cost without drafts measured at a quiet
    // moment, with them at a busy one), and a draft accepted in full must get its probes to show otherwise.
    const bool costs_known = t1 >= 0.0 && td >= 0.0;
    const double full = costs_known ? (tokens + draft_rows) / (t1 + td) : 0.0, without = tokens / t0;
    const bool hopeless = costs_known && (g.fixed ? full <= without : full * (1.0 + kHysteresis) < without);
    // A request starts with a draft that could win: lookup's even at break-even (its probe costs only the
    // step's rows), the draft model's only where a draft accepted in full wins clearly (its probe first
    // catches up on the whole prompt, which break-even drafts would never pay back).
    const double start = kind == GATE_MODEL ? without * (1.0 + kHysteresis) : without / (1.0 + kHysteresis);
    bool win;
    if (!costs_known || (k.n_acc == 0 && full >= start)) {
        win = true;  // nothing measured yet: drafting is how it gets measured
    } else if (k.n_acc == 0) {
        win = false;
    } else {
        // Tokens a microsecond with the draft (its expected acceptances, the draft model's time) and without.
        const double gain = gate_expected(k, draft_rows);
        const double with = (tokens + gain) / (t1 + td);
        win = k.acc >= kMinShare && gain >= kMinGain && with > without * (k.on ? 1.0 : 1.0 + kHysteresis);
    }
    if (win) {
        if (!k.on) k.since = 0;
        k.on = true;
        k.probe_every = kProbeMin;
        return true;
    }
    if (k.on) {  // it just lost: off, and the first re-probe after kProbeMin steps
        k.on = false;
        k.since = 0;
        return false;
    }
    // A re-probe: draft this step, and wait longer for the next (hopeless: only the longest wait, as a probe
    // costs, the draft model catching up on what it missed).
    if (++k.since >= (hopeless ? kProbeMax : k.probe_every)) {
        k.since = 0;
        k.probe_every = std::min(kProbeMax, 2 * k.probe_every);
        return true;
    }
    return false;
}

double gate_expected(const spec_est &k, int32_t draft_rows) {
    if (k.n_acc == 0) return 0.0;
    // A draft's tokens are accepted up to the first rejected one: p + p^2 + ... + p^n.
    const double p = std::min(k.acc, 1.0 - 1e-9);
    return p * (1.0 - std::pow(p, draft_rows)) / (1.0 - p);
}

int32_t gate_length(const spec_gate &g, const spec_est &k, int32_t rows, double tokens, int32_t n) {
    if (g.off || n <= 1 || k.n_acc == 0) return n;
    auto rate = [&](int32_t len) {
        const double t = step_cost(g, rows + len);
        return t > 0.0 ? (tokens + gate_expected(k, len)) / t : -1.0;
    };
    // A bucket's rows cost alike: within one, its longest draft is the best; so the candidates are n and
    // the lengths that fill a smaller bucket.
    int32_t best = n;
    double best_rate = rate(n);
    if (best_rate < 0.0) return n;
    for (int32_t b = 0; b < kBuckets && (1 << b) - rows < n; b++) {
        const int32_t len = (1 << b) - rows;
        if (len <= 0) continue;
        const double r = rate(len);
        if (r > best_rate) {
            best = len;
            best_rate = r;
        }
    }
    return best;
}

}  // namespace shim
