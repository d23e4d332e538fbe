// Continuous batching: requests are queued into sequences (reusing the longest cached prefix), and every
// pw_step builds one llama_batch holding one token for every generating sequence plus prompt chunks of
// new ones, decodes it, then samples, detokenises and checks end-of-generation for each sequence in C.
// Idle sequences keep their KV cells so that a new request can reuse the longest cached prefix.

#include "shim.h"

#include <algorithm>

namespace shim {

// Length of the longest prefix of s made of complete UTF-8 characters.
size_t utf8_complete_prefix(const std::string &s) {
    size_t n = s.size();
    // Look back at most 3 bytes for the start of the last character.
    for (size_t back = 1; back <= 4 && back <= n; back++) {
        unsigned char c = (unsigned char)s[n - back];
        if ((c & 0xC0) == 0x80) continue;  // continuation byte
        size_t need = 1;
        if ((c & 0xE0) == 0xC0) need = 2;
        else if ((c & 0xF0) == 0xE0) need = 3;
        else if ((c & 0xF8) == 0xF0) need = 4;
        return back >= need ? n : n - back;
    }
    return n;  // invalid sequence: let the caller replace it
}

// Position of the cache's next cell: media with M-RoPE take fewer positions than cells.
llama_pos next_pos(const slot &s) {
    llama_pos p = (llama_pos)s.cache.size();
    for (const auto &m : s.cached_media) p -= (llama_pos)m.n_tokens - m.n_pos;
    return p;
}

void slot_release(pw_engine *e, slot &s) {
    s.state = SLOT_IDLE;
    s.prompt.clear();
    s.media.clear();
    s.media_own.clear();
    s.chain.reset();
    s.grammar.reset();
    s.pending.clear();
    s.cancel = false;
    s.i_batch = -1;
    s.last = -1;
    s.draft.clear();
    s.rows.clear();
    s.draft_max = 0;
    s.draft_model_max = 0;
    s.draft_by_model = false;
    s.wait_src = -1;
    s.load.reset();
    s.t_last_used = ++e->tick;
}

void slot_clear(pw_engine *e, slot &s) {
    llama_memory_seq_rm(e->mem, s.id, -1, -1);
    s.cache.clear();
    s.cached_media.clear();
}

size_t common_prefix(const std::vector<llama_token> &a, const int32_t *b, size_t nb) {
    size_t n = std::min(a.size(), nb), i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

void batch_add(llama_batch &b, llama_token tok, llama_pos pos, llama_seq_id seq, bool logits) {
    int32_t i = b.n_tokens++;
    b.token[i] = tok;
    b.pos[i] = pos;
    b.n_seq_id[i] = 1;
    b.seq_id[i][0] = seq;
    b.logits[i] = logits;
}

// The threads for a step's argmax scans and top-k passes over `n_logits` logits. Where the CPU computed the
// logits, the decode threads: with OpenMP they are still spinning from ggml's graph, so the scans start at
// once. Where a GPU or an RPC server computed them, the threads are cold: waking them costs about what they
// save on one vocabulary, and the region leaves them spinning afterwards (libgomp's default wait policy)
// through the next step's remote compute, where an RPC server on the same machine (or anything else) needs
// the cores. Measured over one loopback rpc-server (Gemma 3 270M, 2 threads): 9-11 ms of CPU per token in
// this process against llama-bench's 1.2-1.4. Then only a scan long enough to pay for the wake-up splits.
int32_t scan_threads(const pw_model *pm, llama_context *ctx, size_t n_logits) {
    const int32_t n = (int32_t)llama_n_threads(ctx);
    return pm->output_offloaded && n_logits < ((size_t)1 << 22) ? 1 : n;
}

}  // namespace shim

using namespace shim;

// A request's first lookup draft is this short (free text's first draft is mostly rejected, and where rows
// cost, as on a compute-bound CPU, eight of them cost as much as several steps); it grows while accepted.
constexpr int32_t kDraftStart = 2;

// The idle sequence a new prompt goes to: the one sharing its longest prefix when it keeps at least half
// of what it holds (a conversation going on) or holds the whole prompt (asked again), else an empty one,
// else the least recently used, whose cells then go to host memory while the prefix comes from wherever
// it is cached (cache.cpp).
static slot *choose_slot(pw_engine *e, const int32_t *tokens, int32_t n) {
    auto spare_rank = [](const slot &s) { return std::make_pair(!s.cache.empty(), s.t_last_used); };
    slot *best = nullptr, *spare = nullptr;
    size_t best_lcp = 0;
    for (auto &s : e->slots) {
        if (s.state != SLOT_IDLE) continue;
        size_t lcp = common_prefix(s.cache, tokens, (size_t)n);
        if (!best || lcp > best_lcp || (lcp == best_lcp && s.t_last_used < best->t_last_used)) {
            best = &s;
            best_lcp = lcp;
        }
        if (!spare || spare_rank(s) < spare_rank(*spare)) spare = &s;
    }
    if (best && best_lcp > 0 && (2 * best_lcp >= best->cache.size() || best_lcp >= (size_t)n)) return best;
    return spare;
}

// Queue a prompt (text ids, and media placeholders described by `media`) into an idle sequence; with a
// `leader`, as another choice of the leader's prompt.
static int32_t submit(pw_engine *e, const int32_t *tokens, int32_t n, const std::vector<media_span> &media,
                      const pw_sampling *sp, slot *leader = nullptr) {
    if (e->params.embeddings) return fail(PW_E_INVALID, "this engine serves embeddings only");
    if ((uint32_t)n >= e->n_ctx_seq)
        return fail(PW_E_TOOLONG, "prompt of %d tokens does not fit the context of %u", n, e->n_ctx_seq);
    resolve_waits(e);  // a waiting request copies from its source before that source can be reused
    slot *chosen = choose_slot(e, tokens, n);
    if (!chosen) return fail(PW_E_BUSY, "all %u sequences are busy", e->params.n_seq);
    slot &s = *chosen;
    sampler_ptr grammar;
    if (sp->grammar && sp->grammar[0]) {
        std::string problem = grammar_problem(sp->grammar, e->pm->vocab);
        if (!problem.empty()) return fail(PW_E_GRAMMAR, "invalid grammar: %s", problem.c_str());
        clear_log_errors();
        grammar.reset(llama_sampler_init_grammar(e->pm->vocab, sp->grammar, "root"));
        if (!grammar) return fail(PW_E_GRAMMAR, "invalid grammar: %s", llama_reason().c_str());
    }
    std::vector<chunk_ptr> own;
    std::vector<media_span> spans = media;
    for (auto &m : spans) {
        own.emplace_back(mtmd_input_chunk_copy(m.chunk));
        if (!own.back()) return fail(PW_E_NOMEM, "out of memory");
        m.chunk = own.back().get();
    }
    s.prompt.assign(tokens, tokens + n);
    s.media = std::move(spans);
    s.media_own = std::move(own);
    s.n_gen = 0;
    s.n_predict = sp->n_predict;
    s.n_logprobs = sp->n_logprobs > 20 ? 20 : sp->n_logprobs;
    s.ignore_eos = sp->ignore_eos;
    // Drafts need their rejected cells cut off again, which a recurrent model's state cannot do.
    s.draft_max = e->can_share ? std::max(0, std::min(sp->draft_max, (int32_t)PW_DRAFT_MAX)) : 0;
    s.n_drafted = s.n_accepted = 0;
    s.draft_model_max = e->can_share && e->dctx ? std::max(0, std::min(sp->draft_model_max, (int32_t)PW_DRAFT_MAX)) : 0;
    s.draft_p_min = sp->draft_p_min;
    s.draft_len = std::min(s.draft_max, kDraftStart);
    s.draft_skip = s.draft_backoff = 0;
    gate_reset(s.est);
    s.draft.clear();
    // Top-k of at most 1024 candidates is found by the shim (top_k_logits), penalties then kept by the slot.
    // reference_sampling leaves all sampling to llama.cpp's chain, for comparisons.
    const bool shortcuts = !e->params.reference_sampling;
    s.top_k = shortcuts && sp->temperature > 0.0f && sp->top_k > 0 && sp->top_k <= 1024 ? sp->top_k : 0;
    s.pen_n = s.top_k > 0 && penalizes(e, *sp) ? penalty_window(e, *sp) : 0;
    s.pen_repeat = sp->repeat_penalty;
    s.pen_freq = sp->frequency_penalty;
    s.pen_present = sp->presence_penalty;
    s.pen_prev.clear();
    s.pen_count.clear();
    s.chain = build_chain(e, *sp, s.pen_n == 0);
    s.grammar = std::move(grammar);
    s.argmax = shortcuts && sp->temperature <= 0.0f && !s.grammar && llama_sampler_chain_n(s.chain.get()) == 1;
    // Penalties see the prompt's text, as in llama-server.
    for (int32_t i = 0; i < n; i++) {
        if (tokens[i] < 0) continue;
        llama_sampler_accept(s.chain.get(), tokens[i]);
        if (s.pen_n > 0) pen_accept(s, tokens[i]);
    }
    s.pending.clear();
    s.cancel = false;
    s.last = -1;
    s.i_batch = -1;
    s.t_start_us = llama_time_us();
    s.t_first_us = 0;
    s.t_last_used = ++e->tick;
    if (leader)
        follow(e, s, *leader);  // SLOT_FOLLOW
    else
        reuse_prefix(e, s);  // SLOT_PROMPT, or SLOT_WAIT for a sequence evaluating the same prefix
    return s.id;
}

extern "C" {

int32_t pw_submit(pw_engine *e, const int32_t *tokens, int32_t n, const pw_sampling *sp) {
    if (!e || !tokens || n <= 0 || !sp) return fail(PW_E_INVALID, "a request needs at least one token");
    for (int32_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= e->n_vocab) return fail(PW_E_INVALID, "token %d out of range", tokens[i]);
    return submit(e, tokens, n, {}, sp);
}

int32_t pw_submit_media(pw_engine *e, const pw_media *m, const pw_sampling *sp) {
    if (!e || !m || !sp || m->tokens.empty()) return fail(PW_E_INVALID, "a request needs at least one token");
    if (!e->mtmd) return fail(PW_E_INVALID, "this model has no projector for images");
    if (m->tokens.back() < 0) return fail(PW_E_INVALID, "a prompt cannot end with an image");
    for (const auto &sp_ : m->spans) {
        if (sp_.n_tokens > e->params.n_ubatch && mtmd_decode_use_non_causal(e->mtmd->ctx, sp_.chunk))
            return fail(PW_E_TOOLONG, "an image of %zu tokens needs num_batch of at least %zu (it is %u)",
                        sp_.n_tokens, sp_.n_tokens, e->params.n_ubatch);
    }
    return submit(e, m->tokens.data(), (int32_t)m->tokens.size(), m->spans, sp);
}

int32_t pw_submit_choice(pw_engine *e, int32_t leader, const pw_sampling *sp) {
    if (!e || !sp || leader < 0 || (size_t)leader >= e->slots.size())
        return fail(PW_E_INVALID, "no sequence %d", leader);
    resolve_waits(e);  // the leader's state as the next step will see it
    slot *l = &e->slots[(size_t)leader];
    if (l->state == SLOT_FOLLOW) l = &e->slots[(size_t)l->wait_src];  // a choice of a choice: the same prompt
    if (l->state != SLOT_PROMPT && l->state != SLOT_WAIT && l->state != SLOT_LOAD)
        return fail(PW_E_INVALID, "sequence %d has no prompt still to evaluate", leader);
    if (!e->can_share) {  // cells that cannot be copied: each choice evaluates the prompt
        std::vector<llama_token> prompt = l->prompt;
        return submit(e, prompt.data(), (int32_t)prompt.size(), l->media, sp);
    }
    return submit(e, l->prompt.data(), (int32_t)l->prompt.size(), l->media, sp, l);
}

int32_t pw_cancel(pw_engine *e, int32_t seq) {
    if (!e || seq < 0 || (size_t)seq >= e->slots.size()) return fail(PW_E_INVALID, "no sequence %d", seq);
    if (e->slots[(size_t)seq].state != SLOT_IDLE) e->slots[(size_t)seq].cancel = true;
    return PW_OK;
}

static void emit(pw_engine *e, slot &s, pw_event *ev, llama_token tok, int32_t finish, const std::string &text,
                 float lp, int32_t top_off, int32_t n_top) {
    ev->seq = s.id;
    ev->token = tok;
    ev->finish = finish;
    ev->text_off = (int32_t)e->arena.size();
    ev->text_len = (int32_t)text.size();
    e->arena += text;
    ev->logprob = lp;
    ev->top_off = top_off;
    ev->n_top = n_top;
    ev->n_prompt = (int32_t)s.prompt.size();
    ev->n_cached = s.n_cached;
    ev->n_gen = s.n_gen;
    int64_t now = llama_time_us();
    ev->t_prompt_us = (s.t_first_us ? s.t_first_us : now) - s.t_start_us;
    ev->t_gen_us = s.t_first_us ? now - s.t_first_us : 0;
    ev->n_drafted = s.n_drafted;
    ev->n_accepted = s.n_accepted;
}

// Prompt lookup: n-grams of a sequence's last tokens are looked for in its own cells (prompt and output);
// the longest from kNgramMax down to kNgramMin tokens, the latest of equal length, gives the draft.
constexpr int32_t kNgramMin = 2, kNgramMax = 4;
constexpr int32_t kSkipMax = 16;

// After a sequence's draft of n_draft tokens, of which n_ok were accepted: the next drafts' bounds.
static void adapt_draft(slot &s, int32_t n_draft, int32_t n_ok) {
    if (n_draft == 0) return;
    if (n_ok == 0) {
        s.draft_backoff = std::min(kSkipMax, std::max(1, 2 * s.draft_backoff));
        s.draft_skip = s.draft_backoff;
    } else {
        s.draft_backoff = 0;
    }
    s.draft_len = n_ok == n_draft ? std::min(s.draft_max, 2 * s.draft_len) : n_ok + 1;
}

// Up to `max` tokens that followed the latest earlier occurrence of the sequence's last tokens (its cells,
// then `last`), into s.draft. Where that occurrence is fewer than `max` tokens back (a repeating line, a
// list), the draft goes on past the history's end with its own tokens: the text repeating as it did.
static void lookup_draft(slot &s, int32_t max) {
    s.draft.clear();
    const std::vector<llama_token> &h = s.cache;
    const int64_t n = (int64_t)h.size() + 1;  // the history: the cells, then `last`
    auto at = [&](int64_t i) { return i == n - 1 ? s.last : h[(size_t)i]; };
    int32_t best = 0;
    int64_t best_end = -1;
    for (int64_t end = n - 2; end >= kNgramMin - 1; end--) {
        if (h[(size_t)end] != s.last) continue;
        int32_t len = 1;
        while (len < kNgramMax && end - len >= 0 && h[(size_t)(end - len)] == at(n - 1 - len)) len++;
        if (len > best) {
            best = len;
            best_end = end;
            if (len == kNgramMax) break;
        }
    }
    if (best < kNgramMin) return;
    for (int64_t i = best_end + 1; (int32_t)s.draft.size() < max; i++) {
        llama_token t = i < n ? at(i) : s.draft[(size_t)(i - n)];
        if (t < 0) break;  // a media placeholder is not a token to decode
        s.draft.push_back(t);
    }
}

// Encode the media chunk at the sequence's next prompt position and decode its
// embeddings into the sequence's cells, in decode calls of its own.
static bool eval_media(pw_engine *e, slot &s) {
    auto it = std::find_if(s.media.begin(), s.media.end(), [&s](const media_span &m) { return m.start == s.n_past; });
    if (it == s.media.end()) {
        fail(PW_E_INTERNAL, "no media chunk at prompt position %zu", s.n_past);
        return false;
    }
    llama_pos pos = next_pos(s), new_pos = pos;
    clear_log_errors();
    int64_t t0 = llama_time_us();
    int32_t rc = mtmd_helper_eval_chunk_single(e->mtmd->ctx, e->ctx, it->chunk, pos, s.id,
                                               (int32_t)e->params.n_batch, false, &new_pos);
    e->stats.t_decode_us += llama_time_us() - t0;
    e->stats.n_decode++;
    if (rc != 0) {
        fail(PW_E_DECODE, "image evaluation failed (%d): %s", rc, llama_reason().c_str());
        return false;
    }
    media_span done = *it;
    done.n_pos = new_pos - pos;
    done.chunk = nullptr;
    s.cached_media.push_back(done);
    s.cache.insert(s.cache.end(), s.prompt.begin() + (long)s.n_past, s.prompt.begin() + (long)(s.n_past + done.n_tokens));
    s.n_past += done.n_tokens;
    e->stats.n_prompt_tokens += (int64_t)done.n_tokens;
    return true;
}

// End a sequence with an error; its cells are dropped, as they may be half written.
static void fail_slot(pw_engine *e, slot &s, pw_event *ev) {
    emit(e, s, ev, -1, PW_FINISH_ERROR, std::string(), 0.0f, 0, 0);
    slot_clear(e, s);
    slot_release(e, s);
}

// One sampled token through the per-token path: its log-probabilities, end-of-generation, detokenising,
// the limits; emits its event. Returns true when it ended the sequence (then released).
static bool take_token(pw_engine *e, slot &s, llama_token tok, pw_event *ev) {
    char piece[256];
    float lp = 0.0f;
    int32_t top_off = (int32_t)e->tops.size(), n_top = 0;
    if (s.n_logprobs >= 0) {
        lp = logprobs(e, s.logits, tok, s.n_logprobs);
        n_top = (int32_t)e->tops.size() - top_off;
    }
    s.n_gen++;
    e->stats.n_gen_tokens++;
    int32_t finish = PW_FINISH_NONE;
    if (!s.ignore_eos && llama_vocab_is_eog(e->pm->vocab, tok)) {
        finish = PW_FINISH_STOP;
    } else {
        // Control tokens that do not end the generation are text the families' parsers read
        // (Mistral's [TOOL_CALLS], Kimi's <|tool_calls_section_begin|>, Llama's <|python_tag|>):
        // rendered, as llama-server renders a format's preserved tokens (and Ollama every one).
        bool special = !llama_vocab_is_eog(e->pm->vocab, tok);
        int32_t n = llama_token_to_piece(e->pm->vocab, tok, piece, sizeof piece, 0, special);
        if (n > 0) s.pending.append(piece, (size_t)n);
        if (s.n_predict >= 0 && s.n_gen >= s.n_predict) finish = PW_FINISH_LENGTH;
        else if (s.cache.size() + 1 >= e->n_ctx_seq) finish = PW_FINISH_CONTEXT;
    }
    std::string text;
    if (finish != PW_FINISH_NONE) {
        text.swap(s.pending);
    } else {
        size_t ok = utf8_complete_prefix(s.pending);
        text = s.pending.substr(0, ok);
        s.pending.erase(0, ok);
    }
    emit(e, s, ev, tok, finish, text, lp, top_off, n_top);
    if (finish == PW_FINISH_NONE) return false;
    slot_release(e, s);  // the last token was never decoded: the cache ends before it
    return true;
}

// The speculation gate's say on this step's drafts (gate.cpp), sequence by sequence: prompt lookup's drafts
// (already found, cheap to find) stay where they are expected to win, then the draft model drafts for those
// of its sequences where that is expected to win on top (the first of them paying for its step). A sequence
// whose draft is left out decodes its one token as without speculation.
static void gate_drafts(pw_engine *e) {
    int32_t n_gen = 0, n_prompt = 0;
    for (auto &s : e->slots) {
        if (s.state == SLOT_GEN) n_gen++;
        if (s.state == SLOT_PROMPT) n_prompt += (int32_t)(s.prompt.size() - s.n_past);
    }
    int32_t rows = n_gen + std::min(n_prompt, std::max(0, (int32_t)e->params.n_batch - n_gen));
    double tokens = n_gen;
    for (auto &s : e->slots) {
        if (s.state != SLOT_GEN || s.draft_by_model || s.draft.empty()) continue;
        const int32_t n = gate_length(e->gate, s.est[GATE_LOOKUP], rows, tokens, (int32_t)s.draft.size());
        s.draft.resize((size_t)n);
        if (gate_allows(e->gate, s.est[GATE_LOOKUP], GATE_LOOKUP, rows, tokens, n, false)) {
            rows += n;
            tokens += gate_expected(s.est[GATE_LOOKUP], n);
        } else {
            s.draft.clear();
            e->stats.n_draft_skipped++;
        }
    }
    if (e->model_slots.empty()) return;
    std::vector<slot *> drafting;
    int32_t catch_up = 0;
    for (slot *s : e->model_slots) {
        const int32_t n = std::min(s->draft_model_max, s->draft_room);
        if (!gate_allows(e->gate, s->est[GATE_MODEL], GATE_MODEL, rows, tokens, n, drafting.empty())) {
            s->draft_by_model = false;
            e->stats.n_draft_skipped++;
            continue;
        }
        rows += n;
        tokens += gate_expected(s->est[GATE_MODEL], n);
        catch_up += std::max(0, (int32_t)s->cache.size() + 1 - (int32_t)e->dcache[(size_t)s->id].size());
        drafting.push_back(s);
    }
    if (drafting.empty()) return;
    int64_t t0 = llama_time_us();
    model_drafts(e, drafting);
    // A draft context catching up on many tokens (after steps without drafting, a new prompt) is no
    // measure of a drafting step.
    if (catch_up <= 2 * (int32_t)drafting.size()) gate_draft_measured(e->gate, llama_time_us() - t0);
}

// A step that has nothing to decode but sequences waiting for their state from the disk tier waits this long
// for one before it returns (the caller steps again, submitting what came meanwhile).
constexpr int64_t kLoadWaitUs = 20000;

static bool only_loading(const pw_engine *e) {
    bool loading = false;
    for (const auto &s : e->slots) {
        if (s.state == SLOT_PROMPT || s.state == SLOT_GEN) return false;
        loading = loading || s.state == SLOT_LOAD;
    }
    return loading;
}

static int32_t step_done(pw_engine *e, pw_step_out *out, int32_t n_ev) {
    out->text = e->arena.data();
    out->top = e->tops.data();
    out->n_events = n_ev;
    out->n_active = 0;
    for (auto &s : e->slots) out->n_active += s.state != SLOT_IDLE;
    return n_ev;
}

int32_t pw_step(pw_engine *e, pw_event *events, int32_t cap, pw_step_out *out) {
    if (!e || !events || !out || cap < (int32_t)e->slots.size()) return fail(PW_E_INVALID, "event buffer too small");
    e->arena.clear();
    e->tops.clear();
    int32_t n_ev = 0;
    llama_batch &b = e->batch;
    b.n_tokens = 0;
    const int32_t n_batch = (int32_t)e->params.n_batch;
    for (auto &s : e->slots) s.in_batch = false;

    // Cancelled sequences end now, before they cost another decode.
    for (auto &s : e->slots) {
        if (s.state != SLOT_IDLE && s.cancel) {
            emit(e, s, &events[n_ev++], -1, PW_FINISH_CANCEL, s.pending, 0.0f, 0, 0);
            slot_release(e, s);
        }
    }
    resolve_waits(e);
    if (only_loading(e)) {  // nothing to decode until a state is read: wait for it a while
        disk_wait(e, kLoadWaitUs);
        resolve_waits(e);
    }
    // Generating sequences first: one token each, and the drafts of those that draft, as room allows
    // (in the batch, and in the event buffer: a token each).
    // Drafts: prompt lookup's where it finds one, else the draft model's (its sequences all together).
    e->model_slots.clear();
    for (auto &s : e->slots) {
        if (s.state != SLOT_GEN) continue;
        s.draft.clear();
        s.draft_by_model = false;
        s.draft_room = (int32_t)e->n_ctx_seq - (int32_t)s.cache.size() - 2;
        if (s.n_predict >= 0) s.draft_room = std::min(s.draft_room, s.n_predict - s.n_gen - 1);
        if (s.draft_room <= 0) continue;
        if (s.draft_max > 0 && s.draft_skip > 0) s.draft_skip--;
        else if (s.draft_max > 0) lookup_draft(s, std::min(s.draft_len, s.draft_room));
        if (s.draft.empty() && s.draft_model_max > 0) {
            s.draft_by_model = true;
            e->model_slots.push_back(&s);
        }
    }
    gate_drafts(e);
    const int64_t t_step = llama_time_us();  // the step's cost from here: its decode, then sampling every row
    int32_t room = n_batch, ev_room = cap - (int32_t)e->slots.size();
    for (auto &s : e->slots) room -= s.state == SLOT_GEN;
    for (auto &s : e->slots) {
        if (s.state != SLOT_GEN) continue;
        s.i_batch = b.n_tokens;
        s.in_batch = true;
        const int32_t k = std::max(0, std::min(room, ev_room));
        if ((int32_t)s.draft.size() > k) s.draft.resize((size_t)k);
        room -= (int32_t)s.draft.size();
        ev_room -= (int32_t)s.draft.size();
        s.n_drafted += (int32_t)s.draft.size();
        e->stats.n_draft_tokens += (int64_t)s.draft.size();
        llama_pos pos = next_pos(s);
        batch_add(b, s.last, pos, s.id, true);
        s.cache.push_back(s.last);
        // The drafts' cells are written by this decode; s.cache takes them as they are accepted.
        for (llama_token t : s.draft) batch_add(b, t, ++pos, s.id, true);
    }
    // Prompt chunks fill the rest of the batch; media are evaluated on their own first.
    for (auto &s : e->slots) {
        if (s.state != SLOT_PROMPT) continue;
        bool media_ok = true;
        while (media_ok && s.n_past < s.prompt.size() && s.prompt[s.n_past] < 0 && b.n_tokens < n_batch)
            media_ok = eval_media(e, s);
        if (!media_ok) {
            fail_slot(e, s, &events[n_ev++]);
            continue;
        }
        const int32_t n_before = b.n_tokens;
        llama_pos pos = next_pos(s);
        while (s.n_past < s.prompt.size() && s.prompt[s.n_past] >= 0 && b.n_tokens < n_batch) {
            bool is_last = s.n_past + 1 == s.prompt.size();
            if (is_last) s.i_batch = b.n_tokens;
            batch_add(b, s.prompt[s.n_past], pos++, s.id, is_last);
            s.cache.push_back(s.prompt[s.n_past]);
            s.n_past++;
            e->stats.n_prompt_tokens++;
        }
        s.in_batch = b.n_tokens > n_before;
    }
    level_batch(e);  // fewer ubatches: level.cpp
    out->n_decoded = b.n_tokens;
    if (b.n_tokens > 0) {
        int64_t t0 = llama_time_us();
        int32_t rc = llama_decode(e->ctx, b);
        e->stats.t_decode_us += llama_time_us() - t0;
        e->stats.n_decode++;
        for (auto &s : e->slots) s.copying = false;  // the decode made the pending stream copies
        if (rc != 0) {
            fail(PW_E_DECODE, "llama_decode failed (%d): %s", rc, llama_reason().c_str());
            // The batch's sequences end with an error; their cells are dropped.
            for (auto &s : e->slots) {
                if (s.state == SLOT_IDLE || !s.in_batch) continue;
                fail_slot(e, s, &events[n_ev++]);
            }
            return step_done(e, out, n_ev);
        }
        take_leaders(e);
    }
    // Each output's logits, fetched once (llama_get_logits_ith is not thread-safe). Greedy argmax scans
    // and top-k candidates come first, all sequences together on the decode threads.
    // A drafting sequence's rows (its token's, then each draft's) are all scanned; their top-k candidates
    // depend on the tokens accepted before them, so only the first row's are found here.
    e->greedy_rows.clear();
    e->topk_slots.clear();
    for (auto &s : e->slots) {
        s.greedy = -1;
        if (s.state == SLOT_IDLE || s.i_batch < 0) continue;
        s.rows.clear();
        for (int32_t j = 0; j <= (int32_t)s.draft.size(); j++) s.rows.push_back(llama_get_logits_ith(e->ctx, s.i_batch + j));
        s.logits = s.rows[0];
        if (s.argmax) {
            s.greedy_at = e->greedy_rows.size();
            e->greedy_rows.insert(e->greedy_rows.end(), s.rows.begin(), s.rows.end());
        } else if (s.top_k > 0) {
            e->topk_slots.push_back(&s);
        }
    }
    if (!e->greedy_rows.empty()) {
        e->greedy_toks.resize(e->greedy_rows.size());
        argmax_rows(e->greedy_rows.data(), (int32_t)e->greedy_rows.size(), e->n_vocab, e->greedy_toks.data(),
                    scan_threads(e->pm, e->ctx, e->greedy_rows.size() * (size_t)e->n_vocab));
    }
    const int32_t n_topk = (int32_t)e->topk_slots.size();
    const int32_t n_threads = scan_threads(e->pm, e->ctx, (size_t)n_topk * (size_t)e->n_vocab);
#ifdef _OPENMP
#pragma omp parallel for num_threads(n_threads) schedule(dynamic) if (n_topk > 1 && n_threads > 1)
#endif
    for (int32_t i = 0; i < n_topk; i++) {  // a sequence per thread
        slot &s = *e->topk_slots[(size_t)i];
        if (s.pen_n > 0)
            top_k_penalized(s.logits, e->n_vocab, s, s.cand, s.cand_ids);
        else
            top_k_logits(s.logits, e->n_vocab, s.top_k, s.cand);
    }
    // Sample for every sequence that produced logits; a drafting sequence goes on along its draft while
    // its samples equal the drafted tokens (so its output is what decoding one token a step would give).
    for (auto &s : e->slots) {
        if (s.state == SLOT_IDLE || s.i_batch < 0) continue;
        s.i_batch = -1;
        if (s.state == SLOT_PROMPT) {
            s.state = SLOT_GEN;
            s.t_first_us = llama_time_us();
        }
        const size_t n_cells = s.cache.size() + s.draft.size();  // what the sequence holds after the decode
        const int32_t n_ok_before = s.n_accepted;
        for (size_t j = 0; j < s.rows.size(); j++) {
            if (j > 0) {  // the first row's candidates were found for all sequences together
                s.logits = s.rows[j];
                if (s.argmax) s.greedy = e->greedy_toks[s.greedy_at + j];
                else if (s.top_k > 0 && s.pen_n > 0) top_k_penalized(s.logits, e->n_vocab, s, s.cand, s.cand_ids);
                else if (s.top_k > 0) top_k_logits(s.logits, e->n_vocab, s.top_k, s.cand);
            } else if (s.argmax) {
                s.greedy = e->greedy_toks[s.greedy_at];
            }
            llama_token tok = sample(e, s, s.logits);
            if (tok == kGrammarStuck) {
                fail(PW_E_GRAMMAR, "the grammar allows no token after %d generated (it asks for text no token "
                     "of this model writes)", s.n_gen);
                emit(e, s, &events[n_ev++], -1, PW_FINISH_GRAMMAR, std::string(), 0.0f, 0, 0);
                slot_release(e, s);  // its cells hold what was decoded: still a good prefix
                break;
            }
            if (take_token(e, s, tok, &events[n_ev++])) break;  // ended: the slot is released
            if (j < s.draft.size() && tok == s.draft[j]) {  // the draft's cell holds this token: go on
                s.cache.push_back(tok);
                s.n_accepted++;
                e->stats.n_draft_accepted++;
                continue;
            }
            s.last = tok;
            break;
        }
        // The gate learns from each draft made (a model's empty draft still cost its step).
        const int32_t n_draft = (int32_t)s.draft.size(), n_ok = s.n_accepted - n_ok_before;
        if (s.draft_by_model) gate_accepted(s.est[GATE_MODEL], n_draft, n_ok);
        else if (n_draft > 0) gate_accepted(s.est[GATE_LOOKUP], n_draft, n_ok);
        if (s.state != SLOT_IDLE && !s.draft_by_model)
            adapt_draft(s, (int32_t)s.draft.size(), s.n_accepted - n_ok_before);
        // The cells of rejected drafts (and of an accepted one that ended the sequence) go.
        if (n_cells > s.cache.size() && !llama_memory_seq_rm(e->mem, s.id, next_pos(s), -1)) {
            slot_clear(e, s);  // cannot happen for the models that draft; keep cells and tokens in step
            if (s.state != SLOT_IDLE) fail_slot(e, s, &events[n_ev++]);
        }
        s.draft.clear();
        s.rows.clear();
    }
    gate_step_measured(e->gate, out->n_decoded, llama_time_us() - t_step);
    return step_done(e, out, n_ev);
}

}  // extern "C"
