// Draft models for speculative decoding: a second, smaller model with the target's vocabulary, in its own
// llama_context whose sequence i drafts for the engine's sequence i. Each step, the sequences that draft
// with it first catch up on the target's tokens their draft cells lack (prompt included, in batches over
// all of them), then the draft proposes its greedy tokens, one draft batch per token for all sequences
// together. The target verifies them in its own batch as it does prompt lookup's drafts (batch.cpp).
// The draft's cells are kept right by comparing tokens: where its sequence and the target's differ (a
// rejected draft, a prefix the prompt cache copied or restored, a new request), they are cut and re-evaluated,
// or copied from another sequence whose draft cells hold more of them (the prompt cache copied the target's
// cells from there, or the choices of one prompt all catching up: one evaluates it, the others copy).

#include "shim.h"

#include <algorithm>
#include <cmath>

using namespace shim;

namespace {

// The tokens the target's sequence holds after this step's token: its cells, then `last`.
size_t common_with_target(const std::vector<llama_token> &d, const slot &s) {
    size_t n = std::min(d.size(), s.cache.size());
    size_t i = common_prefix(d, s.cache.data(), n);
    if (i == s.cache.size() && d.size() > i && d[i] == s.last) i++;
    return i;
}

// The probability of the row's top token, when a draft needs it (draft_p_min > 0).
float top_prob(const float *x, int32_t n, llama_token top) {
    const float m = x[top];
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) sum += std::exp((double)(x[i] - m));
    return (float)(1.0 / sum);
}

struct drafting {
    slot *s;
    size_t n_want;      // tokens the target has (cells and last) that the draft must hold before drafting
    int32_t max;        // tokens to draft
    int32_t i_row = -1; // the draft batch row of its latest token, when that row has logits
    int32_t copy_from = -1;  // a sequence catching up in this call whose draft cells it copies afterwards
    size_t copy_len = 0;
};

// A draft stream copy (the whole stream, at the draft context's next decode) beats evaluating this many
// tokens or fewer.
constexpr size_t kMinCopy = 8;

// Give draft sequence `dst` the draft cells of `src`'s first `len` tokens.
void copy_draft(pw_engine *e, int32_t dst, int32_t src, size_t len) {
    auto &d = e->dcache[(size_t)dst];
    llama_memory_seq_rm(e->dmem, dst, -1, -1);
    llama_memory_seq_cp(e->dmem, src, dst, -1, -1);
    e->dcopy_pending = true;
    d.assign(e->dcache[(size_t)src].begin(), e->dcache[(size_t)src].begin() + (long)len);
    if (!llama_memory_seq_rm(e->dmem, dst, (llama_pos)len, -1)) {
        llama_memory_seq_rm(e->dmem, dst, -1, -1);
        d.clear();
        return;
    }
    e->stats.n_draft_copies++;
    e->stats.n_draft_copied_tokens += (int64_t)len;
}

// Where a drafting sequence's draft cells lack much of the target's prefix that another sequence's draft
// cells hold (or will hold once this call's catch-up is done): copy them rather than evaluate them again.
void share_prefixes(pw_engine *e, std::vector<drafting> &ds) {
    for (size_t i = 0; i < ds.size(); i++) {
        drafting &x = ds[i];
        const std::vector<llama_token> &want = x.s->cache;  // last is always evaluated: its logits
        const size_t have = e->dcache[(size_t)x.s->id].size();
        size_t best = have + kMinCopy;
        int32_t now = -1, later = -1;
        for (size_t j = 0; j < e->slots.size(); j++) {
            const auto &o = e->dcache[j];
            if ((int32_t)j == x.s->id) continue;
            size_t n = common_prefix(o, want.data(), want.size());
            if (n > best) {
                best = n;
                now = (int32_t)j;
                later = -1;
            }
        }
        for (size_t j = 0; j < i; j++) {  // earlier ones catch up first, in full
            const drafting &y = ds[j];
            if (y.copy_from >= 0) continue;
            size_t n = std::min(common_prefix(y.s->cache, want.data(), want.size()), y.n_want - 1);
            if (n > best) {
                best = n;
                later = (int32_t)j;
                now = -1;
            }
        }
        if (now >= 0) {
            copy_draft(e, x.s->id, now, best);
        } else if (later >= 0) {
            x.copy_from = later;
            x.copy_len = best;
        }
    }
}

}  // namespace

namespace shim {

void model_drafts(pw_engine *e, const std::vector<slot *> &want) {
    if (!e->dctx || want.empty()) return;
    std::vector<drafting> ds;
    for (slot *s : want) {
        auto &d = e->dcache[(size_t)s->id];
        // Media prompts are not drafted (the draft has no projector); nor tokens the draft has no id for.
        if (!s->cached_media.empty() || s->last >= e->d_n_vocab) continue;
        size_t keep = std::min(common_with_target(d, *s), s->cache.size());  // last is re-fed: its logits
        if (keep < d.size() && !llama_memory_seq_rm(e->dmem, s->id, (llama_pos)keep, -1)) {
            llama_memory_seq_rm(e->dmem, s->id, -1, -1);
            keep = 0;
        }
        d.resize(keep);
        ds.push_back({s, s->cache.size() + 1, std::min(s->draft_model_max, s->draft_room)});
    }
    llama_batch &b = e->dbatch;
    const int32_t n_batch = (int32_t)e->params.n_batch;
    std::vector<const float *> rows;
    std::vector<llama_token> toks;
    std::vector<drafting *> ready;
    // Decode the batch; the sequences whose latest token had logits draft their next token from them.
    auto decode = [&]() -> bool {
        if (b.n_tokens == 0) return true;
        int64_t t0 = llama_time_us();
        int32_t rc = llama_decode(e->dctx, b);
        e->stats.t_decode_us += llama_time_us() - t0;
        if (rc != 0) return false;
        e->dcopy_pending = false;
        rows.clear();
        ready.clear();
        for (auto &x : ds) {
            if (x.i_row < 0) continue;
            rows.push_back(llama_get_logits_ith(e->dctx, x.i_row));
            ready.push_back(&x);
            x.i_row = -1;
        }
        toks.resize(rows.size());
        argmax_rows(rows.data(), (int32_t)rows.size(), e->d_n_vocab, toks.data(),
                    scan_threads(e->draft, e->dctx, rows.size() * (size_t)e->d_n_vocab));
        for (size_t i = 0; i < ready.size(); i++) {
            drafting &x = *ready[i];
            llama_token t = toks[i];
            bool ok = t < e->n_vocab && (x.s->draft_p_min <= 0.0f ||
                                         top_prob(rows[i], e->d_n_vocab, t) >= x.s->draft_p_min);
            if (ok) x.s->draft.push_back(t);
            // A draft ends at its length, a token the target cannot verify or doubts, or the end of text.
            if (!ok || (int32_t)x.s->draft.size() >= x.max || llama_vocab_is_eog(e->draft->vocab, t)) x.max = 0;
        }
        b.n_tokens = 0;
        return true;
    };
    auto fail_all = [&]() {  // a failed draft decode costs only the drafts: the target decodes as usual
        for (auto &x : ds) {
            x.s->draft.clear();
            llama_memory_seq_rm(e->dmem, x.s->id, -1, -1);
            e->dcache[(size_t)x.s->id].clear();
        }
    };
    // Catch up: every sequence's missing tokens, its last one (the target's `last`) with logits; those that
    // copy another's cells once it has caught up, after it.
    share_prefixes(e, ds);
    b.n_tokens = 0;
    auto catch_up = [&](drafting &x) -> bool {
        auto &d = e->dcache[(size_t)x.s->id];
        while (d.size() < x.n_want) {
            if (b.n_tokens >= n_batch && !decode()) return false;
            llama_token t = d.size() < x.s->cache.size() ? x.s->cache[d.size()] : x.s->last;
            if (t >= e->d_n_vocab) {  // a token the draft has no id for: this sequence does not draft
                x.max = 0;
                break;
            }
            const bool is_last = d.size() + 1 == x.n_want;
            if (is_last) x.i_row = b.n_tokens;
            batch_add(b, t, (llama_pos)d.size(), x.s->id, is_last);
            d.push_back(t);
            e->stats.n_draft_caught_up++;
        }
        return true;
    };
    bool deferred = false;
    for (auto &x : ds) {
        if (x.copy_from >= 0) deferred = true;
        else if (!catch_up(x)) return fail_all();
    }
    if (!decode()) return fail_all();
    if (deferred) {  // the copies are made by the next decode, before it writes any cell
        for (auto &x : ds) {
            if (x.copy_from < 0) continue;
            const drafting &src = ds[(size_t)x.copy_from];
            // The source's cells past copy_len may be its own tokens: only the shared prefix is kept.
            if (e->dcache[(size_t)src.s->id].size() >= x.copy_len)
                copy_draft(e, x.s->id, src.s->id, x.copy_len);
            if (!catch_up(x)) return fail_all();
        }
        if (!decode()) return fail_all();
    }
    // Then one token a batch: each drafting sequence's latest draft, whose logits give the next.
    for (;;) {
        for (auto &x : ds) {
            if (x.max == 0 || x.s->draft.empty()) continue;
            auto &d = e->dcache[(size_t)x.s->id];
            x.i_row = b.n_tokens;
            batch_add(b, x.s->draft.back(), (llama_pos)d.size(), x.s->id, true);
            d.push_back(x.s->draft.back());
        }
        if (b.n_tokens == 0) break;
        if (!decode()) return fail_all();
    }
}

}  // namespace shim

extern "C" {

int32_t pw_engine_set_draft(pw_engine *e, pw_model *dm) {
    if (!e || !dm) return fail(PW_E_INVALID, "null argument");
    if (!e->can_share || llama_model_is_recurrent(dm->model) || llama_model_is_hybrid(dm->model))
        return fail(PW_E_INVALID, "speculative decoding needs models whose cells can be cut (not recurrent ones)");
    if (e->params.embeddings) return fail(PW_E_INVALID, "an embedding engine does not draft");
    if (e->dctx) return fail(PW_E_INVALID, "the engine has a draft model already");
    clear_log_errors();
    llama_context *dctx = llama_init_from_model(dm->model, context_params(e->params));
    if (!dctx) return fail(PW_E_NOMEM, "failed to create the draft model's context: %s", llama_reason().c_str());
    e->draft = dm;
    e->dctx = dctx;
    e->dmem = llama_get_memory(dctx);
    e->d_n_vocab = llama_vocab_n_tokens(dm->vocab);
    e->dbatch = llama_batch_init((int32_t)e->params.n_batch, 0, 1);
    e->dcache.assign(e->slots.size(), {});
    return PW_OK;
}

}  // extern "C"
