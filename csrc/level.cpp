// Levelling a step's batch for the way llama.cpp cuts it into ubatches. With a KV stream per sequence
// (kv_unified=false), llama_decode splits a batch into ubatches that each take the same number of tokens
// from a run of consecutive sequence ids (split_equal, sequential), starting at the sequence of the first
// token not yet taken; every ubatch is a pass over the weights. So prompt chunks of 10, 11, 12 and 11 tokens
// on sequences 0-3 take three passes (40 tokens, 3, then 1), sequences 0, 1 and 3 generating take two ({0,1},
// then {3}), and so do sequences 2 and 3 generating beside a prompt on sequence 0 (the batch lists the
// generating ones first). Measured on Gemma 3 270M (4 sequences of ~1,200 cells, 2 threads): a pass of 1-4
// rows ~35 ms, 40 rows ~80 ms, so a pass costs as much as ~27 more rows in one.
//
// Before each decode the batch is put in sequence order and, where that makes fewer passes for few more
// rows, the sequences with fewer tokens also decode some of the tokens just before their own (their last
// cached ones, cut first and decoded again at the same positions: the same cells), idle sequences included,
// so that one run takes every sequence at one length.

#include "shim.h"

#include <algorithm>
#include <climits>

namespace shim {

namespace {

// A pass over the weights is worth this many rows: fewer than measured on a CPU (~27), where each row
// costs most; on a GPU rows cost far less.
constexpr int32_t kPassRows = 16;

// The passes split_equal makes of a batch in sequence order with c[i] tokens of sequence i.
int32_t passes(std::vector<int32_t> left, int32_t n_ubatch) {
    int32_t n = 0;
    for (size_t a = 0;; n++) {
        while (a < left.size() && left[a] == 0) a++;
        if (a == left.size()) return n;
        size_t b = a;
        int32_t k = INT32_MAX;
        while (b < left.size() && left[b] > 0 && (int32_t)(b - a) < n_ubatch) k = std::min(k, left[b++]);
        const int32_t t = std::max(1, std::min(k, n_ubatch / (int32_t)(b - a)));
        for (size_t i = a; i < b; i++) left[i] -= t;
    }
}

// How many of the tokens before its first one in this batch (at `first`) sequence `s` can decode again:
// plain tokens whose cells are its own and settled (no media, no stream copy pending, no state being read).
int32_t room_before(const slot &s, llama_pos first) {
    if (s.copying || !s.cached_media.empty()) return 0;
    if (s.state != SLOT_IDLE && s.state != SLOT_PROMPT && s.state != SLOT_GEN) return 0;
    return std::max(0, std::min((int32_t)first, (int32_t)s.cache.size()));
}

}  // namespace

void level_batch(pw_engine *e) {
    llama_batch &b = e->batch;
    const size_t n_seq = e->slots.size();
    if (n_seq < 2 || b.n_tokens == 0 || !e->can_share || !e->params.level_batch) return;
    std::vector<int32_t> count(n_seq, 0);
    std::vector<llama_pos> first(n_seq, -1);
    for (int32_t i = 0; i < b.n_tokens; i++) {
        const size_t q = (size_t)b.seq_id[i][0];
        if (first[q] < 0) first[q] = b.pos[i];
        count[q]++;
    }
    size_t lo = n_seq, hi = 0;
    for (size_t q = 0; q < n_seq; q++) {
        if (count[q] == 0) continue;
        lo = std::min(lo, q);
        hi = q;
    }
    std::vector<int32_t> room(n_seq, 0);
    for (size_t q = lo; q <= hi; q++) {
        const slot &s = e->slots[q];
        room[q] = room_before(s, count[q] ? first[q] : (llama_pos)s.cache.size());
    }
    // Each length some sequence has is a level to try: those below it (and the idle ones between) are raised
    // to it as far as their cached tokens allow. The cheapest plan wins, leaving the batch as it is included.
    const int32_t n_ubatch = (int32_t)e->params.n_ubatch, spare = (int32_t)e->params.n_batch - b.n_tokens;
    std::vector<int32_t> best_pad(n_seq, 0), pad(n_seq), c(n_seq);
    int64_t best = (int64_t)passes(count, n_ubatch) * kPassRows;
    for (size_t lq = lo; lq <= hi; lq++) {
        const int32_t level = count[lq];
        if (level == 0) continue;
        int32_t added = 0;
        for (size_t q = 0; q < n_seq; q++) {
            pad[q] = q < lo || q > hi ? 0 : std::min(std::max(0, level - count[q]), room[q]);
            c[q] = count[q] + pad[q];
            added += pad[q];
        }
        if (added == 0 || added > spare) continue;
        const int64_t cost = (int64_t)passes(c, n_ubatch) * kPassRows + added;
        if (cost < best) {
            best = cost;
            best_pad = pad;
        }
    }
    // The batch in sequence order, each sequence's re-decoded tokens before its own (their cells cut first);
    // the sequences' output rows follow their tokens.
    struct row {
        llama_token tok;
        llama_pos pos;
        llama_seq_id seq;
        bool logits;
    };
    std::vector<row> old((size_t)b.n_tokens);
    for (int32_t i = 0; i < b.n_tokens; i++) old[(size_t)i] = {b.token[i], b.pos[i], b.seq_id[i][0], b.logits[i] != 0};
    std::vector<int32_t> moved((size_t)b.n_tokens, -1);
    b.n_tokens = 0;
    for (size_t q = 0; q < n_seq; q++) {
        slot &s = e->slots[q];
        const llama_pos at = count[q] ? first[q] : (llama_pos)s.cache.size();
        const int32_t p = best_pad[q];
        if (p > 0 && llama_memory_seq_rm(e->mem, (llama_seq_id)q, at - p, -1)) {
            for (llama_pos pos = at - p; pos < at; pos++) batch_add(b, s.cache[(size_t)pos], pos, (llama_seq_id)q, false);
            e->stats.n_level_tokens += p;
        }
        for (size_t i = 0; i < old.size(); i++) {
            if ((size_t)old[i].seq != q) continue;
            moved[i] = b.n_tokens;
            batch_add(b, old[i].tok, old[i].pos, old[i].seq, old[i].logits);
        }
    }
    for (auto &s : e->slots)
        if (s.i_batch >= 0) s.i_batch = moved[(size_t)s.i_batch];
}

}  // namespace shim
