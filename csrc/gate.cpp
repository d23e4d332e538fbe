// The speculation gate: speculative decoding only where it wins. The engine keeps running estimates (EWMA) of
// what a target step (its decode, then sampling each row) costs as a function of its rows (buckets of powers of two: the extra rows of drafts are
// nearly free while decoding is memory-bound, few sequences, and cost real time when it is compute-bound), of
// what the draft model's drafting costs a step (both per engine: they are the machine's), and, per sequence
// and kind of draft, of how many of its tokens get accepted a step (per request: a free-form answer's
// acceptance says nothing about the code rewrite that follows it). Before a step's drafts are verified, each
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

namespace shim {

namespace {

constexpr double kAlpha = 0.25;       // EWMA weight of a new sample
constexpr double kHysteresis = 0.05;  // an off kind turns on only when it wins by this much
constexpr int32_t kProbeMin = 16, kProbeMax = 512;
constexpr int32_t kRefresh = 256;  // while drafting, a step without drafts this often keeps that cost measured
// Accepted tokens per drafting sequence and step start at kPrior (one rejected draft does not end drafting)
// and must be at least kMinGain to be worth a draft at all.
constexpr double kPrior = 0.5, kMinGain = 0.05;

void ewma(double &v, int32_t &n, double x) {
    v = n == 0 ? x : v + kAlpha * (x - v);
    if (n < 1 << 30) n++;
}

int32_t bucket(int32_t rows) {
    int32_t b = 0;
    while (b + 1 < spec_gate::kBuckets && (1 << b) < rows) b++;
    return b;
}

// The expected cost of a target decode of `rows` rows, or < 0 when nothing is known yet.
double step_cost(const spec_gate &g, int32_t rows) {
    if (g.fixed) return g.fix_step_us + g.fix_row_us * rows;
    int32_t b = bucket(rows);
    if (g.n_step[b] > 0) return g.t_step[b];
    // Unmeasured: as the nearest smaller measured size (optimistic, so that a probe measures it).
    for (int32_t i = b - 1; i >= 0; i--)
        if (g.n_step[i] > 0) return g.t_step[i];
    return -1.0;
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
    int32_t b = bucket(rows);
    ewma(g.t_step[b], g.n_step[b], (double)us);
}

void gate_draft_measured(spec_gate &g, int64_t us) { ewma(g.t_draft, g.n_draft, (double)us); }

void gate_accepted(spec_est &k, int32_t n_accepted) {
    if (k.n_acc == 0) k.acc = kPrior;  // the first sample moves it from kPrior, as every later one
    k.acc += kAlpha * ((double)n_accepted - k.acc);
    if (k.n_acc < 1 << 30) k.n_acc++;
}

bool gate_allows(spec_gate &g, spec_est &k, int kind, int32_t rows, double tokens, int32_t draft_rows,
                 bool pays_draft) {
    if (g.off || draft_rows == 0) return true;
    const double t0 = step_cost(g, rows), t1 = step_cost(g, rows + draft_rows);
    double td = 0.0;
    if (kind == GATE_MODEL && pays_draft) td = g.fixed ? g.fix_draft_us : g.n_draft > 0 ? g.t_draft : -1.0;
    bool win;
    if (t0 < 0.0 || (k.on && !g.fixed && ++k.since >= kRefresh)) {
        // The step without drafts unmeasured (or measured long ago, when drafting all along): one such step.
        k.since = 0;
        return false;
    } else if (k.n_acc == 0 || t1 < 0.0 || td < 0.0) {
        win = true;  // nothing measured yet: drafting is how it gets measured
    } else {
        // Tokens a microsecond with the draft (its expected acceptances, the draft model's time) and without.
        const double with = (tokens + k.acc) / (t1 + td), without = tokens / t0;
        win = k.acc >= kMinGain && with > without * (k.on ? 1.0 : 1.0 + kHysteresis);
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
    // A re-probe: draft this step, and wait longer for the next. Where even a draft accepted in full would
    // lose (a draft model as dear as the target, a compute-bound batch), only the longest wait: acceptance
    // cannot change that, and a probe costs (the draft model catching up on what it missed).
    const bool hopeless = t0 >= 0.0 && t1 >= 0.0 && td >= 0.0 &&
                          (tokens + draft_rows) / (t1 + td) <= tokens / t0;
    if (++k.since >= (hopeless ? kProbeMax : k.probe_every)) {
        k.since = 0;
        k.probe_every = std::min(kProbeMax, 2 * k.probe_every);
        return true;
    }
    return false;
}

double gate_expected(const spec_est &k) { return k.n_acc > 0 ? k.acc : 0.0; }

}  // namespace shim
