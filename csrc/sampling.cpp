// Sampling: llama.cpp sampler chains, with shortcuts of ours for greedy (argmax) and top-k sampling over
// large vocabularies, penalties kept per sequence, log-probabilities, and grammar checks.

#include "shim.h"

#include "llama-grammar.h"  // internal: the parser, for its error message

#include <algorithm>
#include <cmath>
#include <cstring>

namespace shim {

int32_t penalty_window(const pw_engine *e, const pw_sampling &sp) {
    return sp.repeat_last_n < 0 ? (int32_t)e->n_ctx_seq : sp.repeat_last_n;
}

bool penalizes(const pw_engine *e, const pw_sampling &sp) {
    return penalty_window(e, sp) > 0 &&
           (sp.repeat_penalty != 1.0f || sp.presence_penalty != 0.0f || sp.frequency_penalty != 0.0f);
}

sampler_ptr build_chain(const pw_engine *e, const pw_sampling &sp, bool with_penalties) {
    llama_sampler_chain_params cp = llama_sampler_chain_default_params();
    cp.no_perf = true;
    llama_sampler *ch = llama_sampler_chain_init(cp);
    int32_t last_n = penalty_window(e, sp);
    if (with_penalties && penalizes(e, sp))
        llama_sampler_chain_add(ch, llama_sampler_init_penalties(e->n_vocab, last_n, sp.repeat_penalty,
                                                                 sp.frequency_penalty, sp.presence_penalty));
    if (sp.temperature <= 0.0f) {
        llama_sampler_chain_add(ch, llama_sampler_init_greedy());
        return sampler_ptr(ch);
    }
    if (sp.top_k > 0) llama_sampler_chain_add(ch, llama_sampler_init_top_k(sp.top_k));
    if (sp.typical_p < 1.0f && sp.typical_p > 0.0f) llama_sampler_chain_add(ch, llama_sampler_init_typical(sp.typical_p, 1));
    if (sp.top_p < 1.0f && sp.top_p > 0.0f) llama_sampler_chain_add(ch, llama_sampler_init_top_p(sp.top_p, 1));
    if (sp.min_p > 0.0f) llama_sampler_chain_add(ch, llama_sampler_init_min_p(sp.min_p, 1));
    llama_sampler_chain_add(ch, llama_sampler_init_temp(sp.temperature));
    llama_sampler_chain_add(ch, llama_sampler_init_dist(sp.seed));
    return sampler_ptr(ch);
}

void fill_candidates(pw_engine *e, const float *logits, llama_token_data_array &arr) {
    e->cur.resize((size_t)e->n_vocab);
    for (int32_t t = 0; t < e->n_vocab; t++) e->cur[(size_t)t] = llama_token_data{t, logits[t], 0.0f};
    arr = llama_token_data_array{e->cur.data(), e->cur.size(), -1, false};
}

// Greedy sampling is an argmax over the vocabulary (262k logits for Gemma 3, 16 MB for 16 sequences per
// step), the only per-token work of ours that grows with the vocabulary. One pass: the maxima of
// 1024-logit blocks vectorise (no index tracking, no early exit), then only the winning block is scanned
// again for the first position of its maximum. NaN logits are never chosen.
struct best_logit {
    float v;
    int32_t at;
};

float block_max(const float *x) {
    float m[16];
    for (float &v : m) v = -INFINITY;
    for (int32_t i = 0; i < 1024; i += 16)
        for (int j = 0; j < 16; j++) m[j] = x[i + j] > m[j] ? x[i + j] : m[j];
    float best = m[0];
    for (int j = 1; j < 16; j++) best = m[j] > best ? m[j] : best;
    return best;
}

best_logit argmax_range(const float *x, int32_t lo, int32_t hi) {
    best_logit b{-INFINITY, lo};
    int32_t i = lo, block = -1;
    for (; i + 1024 <= hi; i += 1024) {
        float m = block_max(x + i);
        if (m > b.v) {
            b.v = m;
            block = i;
        }
    }
    for (int32_t k = i; k < hi; k++)
        if (x[k] > b.v) {
            b.v = x[k];
            b.at = k;
            block = -1;
        }
    if (block >= 0)
        for (int32_t k = block; k < block + 1024; k++)
            if (x[k] == b.v) {
                b.at = k;
                break;
            }
    return b;
}

// The argmax of each row, split over the decode threads: with OpenMP these are the threads ggml's
// graph just ran on, still spinning, so the scans start at once.
void argmax_rows(const float *const *rows, int32_t n_rows, int32_t n, llama_token *out, int32_t n_threads) {
    if (n_rows <= 0) return;
    const int32_t parts = std::max(1, n_threads / n_rows);
    const int32_t chunk = ((n + parts - 1) / parts + 1023) / 1024 * 1024;
    const int32_t n_tasks = n_rows * parts;
    std::vector<best_logit> res((size_t)n_tasks);
#ifdef _OPENMP
#pragma omp parallel for num_threads(n_threads) schedule(static) if (n_tasks > 1 && n_threads > 1)
#endif
    for (int32_t t = 0; t < n_tasks; t++) {
        const int32_t lo = (t % parts) * chunk, hi = std::min(n, lo + chunk);
        res[(size_t)t] = lo < hi ? argmax_range(rows[t / parts], lo, hi) : best_logit{-INFINITY, lo};
    }
    for (int32_t r = 0; r < n_rows; r++) {
        best_logit b = res[(size_t)r * parts];
        for (int32_t p = 1; p < parts; p++)
            if (res[(size_t)(r * parts + p)].v > b.v) b = res[(size_t)(r * parts + p)];
        out[r] = b.at;
    }
}

// Top-k sampling (Ollama's default, k = 40) over a large vocabulary: llama.cpp's chain would copy every
// logit into a candidate array and partially sort it. The k largest logits are found here in one pass
// instead: blocks whose maximum cannot enter the current top k are skipped after a vectorised scan, the
// rest go through a k-entry heap. The result is what llama.cpp's top-k keeps, sorted by logit (ties by
// token id), so the rest of the chain runs on k candidates exactly as it would after its own top-k.
bool ranks_higher(const llama_token_data &a, const llama_token_data &b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

void top_k_logits(const float *x, int32_t n, int32_t k, std::vector<llama_token_data> &out) {
    out.clear();
    int32_t i = 0;
    for (; i < n && (int32_t)out.size() < k; i++) {
        if (std::isnan(x[i])) continue;
        out.push_back(llama_token_data{i, x[i], 0.0f});
        std::push_heap(out.begin(), out.end(), ranks_higher);  // the lowest-ranked on top
    }
    if ((int32_t)out.size() == k) {
        float least = out.front().logit;
        auto take = [&](int32_t t) {
            std::pop_heap(out.begin(), out.end(), ranks_higher);
            out.back() = llama_token_data{t, x[t], 0.0f};
            std::push_heap(out.begin(), out.end(), ranks_higher);
            least = out.front().logit;
        };
        for (; i < n && i % 1024 != 0; i++)
            if (x[i] > least) take(i);  // an equal logit has a larger id: it ranks lower
        for (; i + 1024 <= n; i += 1024)
            if (block_max(x + i) > least)
                for (int32_t t = i; t < i + 1024; t++)
                    if (x[t] > least) take(t);
        for (; i < n; i++)
            if (x[i] > least) take(i);
    }
    std::sort(out.begin(), out.end(), ranks_higher);
}

// llama.cpp's penalties sampler, for one token's logit and its count in the window.
float penalized(const slot &s, float logit, int32_t count) {
    logit = logit <= 0 ? logit * s.pen_repeat : logit / s.pen_repeat;
    return logit - float(count) * s.pen_freq - float(count > 0) * s.pen_present;
}

void pen_accept(slot &s, llama_token tok) {
    s.pen_count[tok]++;
    if ((int32_t)s.pen_prev.size() >= s.pen_n) {
        llama_token old = s.pen_prev.front();
        s.pen_prev.pop_front();
        if (--s.pen_count[old] == 0) s.pen_count.erase(old);
    }
    s.pen_prev.push_back(tok);
}

// Top-k after penalties, touching only the penalised tokens: at most m = |window| tokens change, so the
// k best unpenalised tokens are among the k + m best raw logits; the penalised ones are added by hand.
void top_k_penalized(const float *x, int32_t n, const slot &s, std::vector<llama_token_data> &out,
                     std::vector<llama_token> &ids) {
    top_k_logits(x, n, s.top_k + (int32_t)s.pen_count.size(), out);
    ids.clear();
    for (auto &c : out) {
        ids.push_back(c.id);
        auto it = s.pen_count.find(c.id);
        if (it != s.pen_count.end()) c.logit = penalized(s, c.logit, it->second);
    }
    std::sort(ids.begin(), ids.end());
    for (const auto &[tok, count] : s.pen_count) {
        if (tok < 0 || tok >= n || std::isnan(x[tok]) || std::binary_search(ids.begin(), ids.end(), tok)) continue;
        out.push_back(llama_token_data{tok, penalized(s, x[tok], count), 0.0f});
    }
    std::sort(out.begin(), out.end(), ranks_higher);
    if ((int32_t)out.size() > s.top_k) out.resize((size_t)s.top_k);
}

// Every token as a candidate, with the slot's own penalties applied (the chain then has none).
void full_candidates(pw_engine *e, const slot &s, const float *logits, llama_token_data_array &arr) {
    fill_candidates(e, logits, arr);
    if (s.pen_n <= 0) return;
    for (const auto &[tok, count] : s.pen_count)
        if (tok >= 0 && tok < e->n_vocab) arr.data[tok].logit = penalized(s, arr.data[tok].logit, count);
}

// Sample with the chain; check only the chosen token against the grammar and
// resample with the grammar applied when it is rejected (grammars are slow on
// large vocabularies).
llama_token sample(pw_engine *e, slot &s, const float *logits) {
    if (s.argmax) return s.greedy;  // found for all greedy sequences before sampling
    llama_token_data_array arr;
    if (s.top_k > 0 && !s.cand.empty())
        arr = llama_token_data_array{s.cand.data(), s.cand.size(), -1, true};
    else
        full_candidates(e, s, logits, arr);
    llama_sampler_apply(s.chain.get(), &arr);
    llama_token tok = arr.data[arr.selected].id;
    if (s.grammar) {
        llama_token_data one{tok, 1.0f, 0.0f};
        llama_token_data_array single{&one, 1, -1, false};
        llama_sampler_apply(s.grammar.get(), &single);
        if (std::isinf(one.logit) && one.logit < 0) {
            full_candidates(e, s, logits, arr);
            llama_sampler_apply(s.grammar.get(), &arr);
            // A grammar can reach a point no token continues (it wants text no token writes): llama.cpp
            // would sample among -inf and then abort in accept, so the sequence ends here instead.
            bool open = false;
            for (size_t i = 0; i < arr.size && !open; i++) open = !(std::isinf(arr.data[i].logit) && arr.data[i].logit < 0);
            if (!open) return kGrammarStuck;
            llama_sampler_apply(s.chain.get(), &arr);
            tok = arr.data[arr.selected].id;
        }
        try {
            llama_sampler_accept(s.grammar.get(), tok);
        } catch (const std::exception &) {
            return kGrammarStuck;
        }
    }
    llama_sampler_accept(s.chain.get(), tok);
    if (s.pen_n > 0) pen_accept(s, tok);
    return tok;
}

// Log-probability of tok under the model's raw distribution, and the top n.
float logprobs(pw_engine *e, const float *logits, llama_token tok, int32_t n_top) {
    float mx = -INFINITY;
    for (int32_t t = 0; t < e->n_vocab; t++) mx = std::max(mx, logits[t]);
    double sum = 0.0;
    for (int32_t t = 0; t < e->n_vocab; t++) sum += std::exp((double)(logits[t] - mx));
    const float lse = mx + (float)std::log(sum);
    if (n_top > 0) {
        std::vector<llama_token> idx((size_t)e->n_vocab);
        for (int32_t t = 0; t < e->n_vocab; t++) idx[(size_t)t] = t;
        int32_t k = std::min(n_top, e->n_vocab);
        std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                          [logits](llama_token a, llama_token b) { return logits[a] > logits[b]; });
        for (int32_t j = 0; j < k; j++) e->tops.push_back(pw_top{idx[(size_t)j], logits[idx[(size_t)j]] - lse});
    }
    return logits[tok] - lse;
}

// Why a GBNF grammar cannot be used, or "" when it can. llama.cpp's own parse()
// writes the reason to stderr and returns false; the same steps here keep it. The
// vocabulary resolves token names (<|im_end|>); a token reference to an end-of-generation
// token is refused: llama.cpp masks those tokens until the grammar is complete, so such a
// grammar could never be followed (and llama.cpp aborts when it is tried).
std::string grammar_problem(const char *src, const llama_vocab *vocab) {
    llama_grammar_parser parser(vocab);
    try {
        const char *pos = src;
        for (;;) {
            while (*pos == ' ' || *pos == '\t' || *pos == '\r' || *pos == '\n') pos++;
            if (*pos != '#') break;
            while (*pos && *pos != '\n') pos++;
        }
        while (*pos) pos = parser.parse_rule(pos);
        for (const auto &kv : parser.symbol_ids) {
            if (kv.second >= parser.rules.size() || parser.rules[kv.second].empty())
                return "rule '" + kv.first + "' is used but not defined";
        }
        for (const auto &rule : parser.rules) {
            for (const auto &el : rule) {
                if ((el.type != LLAMA_GRETYPE_TOKEN && el.type != LLAMA_GRETYPE_TOKEN_NOT) || !vocab) continue;
                if (el.value >= (uint32_t)llama_vocab_n_tokens(vocab))
                    return "token id " + std::to_string(el.value) + " is out of range (the vocabulary has " +
                           std::to_string(llama_vocab_n_tokens(vocab)) + ")";
                if (el.type == LLAMA_GRETYPE_TOKEN_NOT || !llama_vocab_is_eog(vocab, (llama_token)el.value)) continue;
                return "token " + std::string(llama_vocab_get_text(vocab, (llama_token)el.value)) + " (id " +
                       std::to_string(el.value) + ") ends the generation; leave it out, the text ends where the "
                       "grammar is complete";
            }
        }
    } catch (const std::exception &err) {
        std::string msg = err.what();
        if (msg.size() > 160) msg = msg.substr(0, 157) + "...";
        return msg.empty() ? std::string("syntax error") : msg;
    }
    return std::string();
}

}  // namespace shim

using namespace shim;

extern "C" {

pw_sampling pw_sampling_default(void) {
    pw_sampling s;
    memset(&s, 0, sizeof s);
    s.seed = 0xFFFFFFFFu;
    s.top_k = 40;
    s.top_p = 0.9f;
    s.min_p = 0.0f;
    s.typical_p = 1.0f;
    s.temperature = 0.8f;
    s.repeat_last_n = 64;
    s.repeat_penalty = 1.0f;
    s.n_predict = -1;
    s.n_logprobs = -1;
    return s;
}

void pw_argmax_rows(const float *const *rows, int32_t n_rows, int32_t n, int32_t *out, int32_t n_threads) {
    if (!rows || !out || n <= 0) return;
    argmax_rows(rows, n_rows, n, out, std::max(1, n_threads));
}

int32_t pw_top_k(const float *logits, int32_t n, int32_t k, int32_t *ids, float *values) {
    if (!logits || !ids || !values || n <= 0 || k <= 0) return 0;
    std::vector<llama_token_data> cand;
    top_k_logits(logits, n, k, cand);
    for (size_t i = 0; i < cand.size(); i++) {
        ids[i] = cand[i].id;
        values[i] = cand[i].logit;
    }
    return (int32_t)cand.size();
}

int32_t pw_top_k_penalized(const float *logits, int32_t n, int32_t k, const int32_t *history,
                           int32_t n_history, int32_t last_n, float repeat, float freq, float present,
                           int32_t *ids, float *values) {
    if (!logits || !ids || !values || n <= 0 || k <= 0 || last_n <= 0 || (n_history > 0 && !history)) return 0;
    slot s;
    s.top_k = k;
    s.pen_n = last_n;
    s.pen_repeat = repeat;
    s.pen_freq = freq;
    s.pen_present = present;
    for (int32_t i = 0; i < n_history; i++) pen_accept(s, history[i]);
    top_k_penalized(logits, n, s, s.cand, s.cand_ids);
    for (size_t i = 0; i < s.cand.size(); i++) {
        ids[i] = s.cand[i].id;
        values[i] = s.cand[i].logit;
    }
    return (int32_t)s.cand.size();
}

// Whether llama.cpp's grammar engine takes these tokens, in order, as a complete text of the grammar
// (an end-of-generation token among them ends the text there): 1 yes, 0 no, < 0 an error.
int32_t pw_grammar_accepts(const pw_model *pm, const char *grammar, const int32_t *tokens, int32_t n) {
    if (!pm || !grammar || (n > 0 && !tokens)) return fail(PW_E_INVALID, "missing model, grammar or tokens");
    std::string problem = grammar_problem(grammar, pm->vocab);
    if (!problem.empty()) return fail(PW_E_GRAMMAR, "invalid grammar: %s", problem.c_str());
    clear_log_errors();
    sampler_ptr g(llama_sampler_init_grammar(pm->vocab, grammar, "root"));
    if (!g) return fail(PW_E_GRAMMAR, "invalid grammar: %s", llama_reason().c_str());
    auto allowed = [&](llama_token tok) {
        llama_token_data one{tok, 1.0f, 0.0f};
        llama_token_data_array single{&one, 1, -1, false};
        llama_sampler_apply(g.get(), &single);
        return !(std::isinf(one.logit) && one.logit < 0);
    };
    for (int32_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= llama_vocab_n_tokens(pm->vocab)) return fail(PW_E_INVALID, "bad token");
        if (llama_vocab_is_eog(pm->vocab, tokens[i])) return allowed(tokens[i]) ? 1 : 0;
        if (!allowed(tokens[i])) return 0;
        llama_sampler_accept(g.get(), tokens[i]);
    }
    llama_token eos = llama_vocab_eos(pm->vocab);
    return eos != LLAMA_TOKEN_NULL && allowed(eos) ? 1 : 0;
}

}  // extern "C"
