// The prompt cache: a request reuses the longest prefix of its prompt held by any tier, and evaluates only
// the rest.
//
//   - its own sequence's cells (the KV cache as it is);
//   - another sequence's cells, idle or running, up to what that sequence has evaluated: copied with
//     llama_memory_seq_cp. Each sequence is its own KV stream (kv_unified=false, so that every sequence has
//     its whole num_ctx), and a copy across streams copies the whole stream at the next decode; the cells
//     past the prefix are then cut. A request whose prefix another sequence is still evaluating waits for
//     it (SLOT_WAIT) instead of evaluating it a second time;
//   - a sequence's state saved in host memory (llama_state_seq_get_data) before its cells were given to
//     another prompt, in a byte-bounded LRU list; restored with llama_state_seq_set_data (and so moved
//     back into a sequence);
//   - a state host memory let go, in a file of the disk tier (disk.cpp), when there is one.
//
// Sharing needs sequences whose cells can be cut at any position: not recurrent or hybrid models.

#include "shim.h"

#include <algorithm>

namespace shim {

namespace {

// Below this many tokens a copy or a restore is not worth its cost (a whole stream is copied).
constexpr size_t kMinGain = 8;
// Waiting costs the waiting request a step: only for prefixes longer than this.
constexpr size_t kMinWait = 32;
// States shorter than this are not saved.
constexpr size_t kMinSave = 16;

// Keep a sequence's first `keep` tokens. Cells are removed by position: after an M-RoPE image, positions
// run behind cell counts. A sequence that cannot be cut there is emptied.
void truncate(pw_engine *e, slot &s, size_t keep) {
    s.cache.resize(std::min(keep, s.cache.size()));
    while (!s.cached_media.empty() && s.cached_media.back().start + s.cached_media.back().n_tokens > s.cache.size())
        s.cached_media.pop_back();
    if (!llama_memory_seq_rm(e->mem, s.id, next_pos(s), -1)) slot_clear(e, s);
}

void ram_drop(pw_engine *e, std::list<ram_entry>::iterator it) {
    e->ram.bytes -= it->bytes();
    e->ram.entries.erase(it);
}

// Save a sequence's cells before they go to another prompt, unless a saved state already holds them. A
// saved state that this one extends is replaced; the oldest go to the disk tier (or are dropped) past the
// bound, but never `keep` (the state about to be restored). A state larger than the bound goes to disk.
void ram_save(pw_engine *e, const slot &s, std::list<ram_entry>::iterator keep) {
    ram_cache &r = e->ram;
    if ((r.budget == 0 && !e->disk) || s.cache.size() < kMinSave || s.copying) return;
    for (auto it = r.entries.begin(); it != r.entries.end(); ++it) {
        if (common_prefix(s.cache, it->tokens.data(), it->tokens.size()) == s.cache.size()) {
            r.entries.splice(r.entries.begin(), r.entries, it);
            return;
        }
    }
    if (!e->disk && llama_state_seq_get_size(e->ctx, s.id) + s.cache.size() * sizeof(llama_token) > r.budget) return;
    ram_entry en;
    if (!snapshot(e, s, en)) return;
    if (en.bytes() > r.budget) {
        disk_put(e, std::move(en));
        return;
    }
    for (auto it = r.entries.begin(); it != r.entries.end();) {
        auto next = std::next(it);
        if (it != keep && common_prefix(it->tokens, s.cache.data(), s.cache.size()) == it->tokens.size())
            ram_drop(e, it);
        it = next;
    }
    r.bytes += en.bytes();
    r.entries.push_front(std::move(en));
    e->stats.ram_saves++;
    for (auto it = r.entries.end(); r.bytes > r.budget && it != r.entries.begin();) {
        auto victim = std::prev(it);
        if (victim == keep) {
            it = victim;
            continue;
        }
        r.bytes -= victim->bytes();
        disk_put(e, std::move(*victim));
        r.entries.erase(victim);
        e->stats.ram_evictions++;
    }
}

// Give `dst` the cells of `src`'s first `len` tokens.
void copy_prefix(pw_engine *e, slot &dst, slot &src, size_t len) {
    llama_memory_seq_rm(e->mem, dst.id, -1, -1);
    llama_memory_seq_cp(e->mem, src.id, dst.id, -1, -1);
    dst.cache = src.cache;
    dst.cached_media = src.cached_media;
    dst.copying = src.copying = true;
    truncate(e, dst, len);
    e->stats.kv_copies++;
    e->stats.kv_shared_tokens += (int64_t)dst.cache.size();
}

// Give draft sequence `id` the draft cells a saved state holds, where it has them; else its draft cells stay
// as they are, and the draft catches up on the tokens they lack (model_drafts compares them).
void restore_draft(pw_engine *e, int32_t id, const ram_entry &en) {
    if (!e->dctx || en.dstate.empty() || e->dcopy_pending) return;
    auto &d = e->dcache[(size_t)id];
    if (llama_state_seq_set_data(e->dctx, en.dstate.data(), en.dstate.size(), id) == 0) {
        llama_memory_seq_rm(e->dmem, id, -1, -1);
        d.clear();
        return;
    }
    d.assign(en.tokens.begin(), en.tokens.begin() + (long)en.n_draft);
}

// Give `dst` the cells of a saved state's first `len` tokens, and its draft sequence the draft's.
bool restore(pw_engine *e, slot &dst, const ram_entry &en, size_t len) {
    if (llama_state_seq_set_data(e->ctx, en.state.data(), en.state.size(), dst.id) == 0) {
        slot_clear(e, dst);
        return false;
    }
    restore_draft(e, dst.id, en);
    dst.cache = en.tokens;
    dst.cached_media = en.media;
    truncate(e, dst, len);
    return true;
}

// Give `dst` the first `len` tokens of a state read from the disk tier (at most what its prompt can use).
void restore_read(pw_engine *e, slot &dst, const ram_entry &en, size_t len) {
    if (restore(e, dst, en, std::min(len, usable(en.tokens, dst)))) dst.reused_disk = (int64_t)dst.cache.size();
}

// What a sequence held is worth saving before it is overwritten when a good part of it goes (not the short
// tail of an answer to a shared prefix).
void save_if_lost(pw_engine *e, const slot &s, size_t lost, std::list<ram_entry>::iterator keep) {
    if (lost >= kMinSave && 4 * lost >= s.cache.size()) ram_save(e, s, keep);
}

// The request's prefix is settled: count it and let it evaluate the rest.
void start_prompt(pw_engine *e, slot &s) {
    s.n_past = s.cache.size();
    s.n_cached = (int32_t)s.n_past;
    s.reused_kv = (int64_t)s.n_past - s.reused_ram - s.reused_disk;
    s.state = SLOT_PROMPT;
    s.wait_src = -1;
    e->stats.n_reused_tokens += (int64_t)s.n_past;
    if (s.reused_kv > 0) e->stats.kv_hits++;
    else e->stats.kv_misses++;
    if (s.reused_ram > 0) {
        e->stats.ram_hits++;
        e->stats.ram_restored_tokens += s.reused_ram;
    } else if (e->ram.budget > 0) {
        e->stats.ram_misses++;
    }
    if (s.reused_disk > 0) {
        e->stats.disk_hits++;
        e->stats.disk_restored_tokens += s.reused_disk;
    } else if (e->disk) {
        e->stats.disk_misses++;
    }
}

// The draft context's cells of the tokens `s` holds, beside its state: restored, they spare the draft from
// evaluating the prefix again. Its cells past what they share with the target's tokens (rejected drafts,
// `last`, before a media span the draft never evaluated) are cut first: the draft would re-evaluate those.
void snapshot_draft(pw_engine *e, const slot &s, ram_entry &out) {
    if (!e->dctx || e->dcopy_pending) return;  // its cells may be a copy's, still to be made
    auto &d = e->dcache[(size_t)s.id];
    size_t n = common_prefix(d, s.cache.data(), s.cache.size());
    if (!s.cached_media.empty()) n = std::min(n, s.cached_media.front().start);
    if (n < kMinSave || (n < d.size() && !llama_memory_seq_rm(e->dmem, s.id, (llama_pos)n, -1))) return;
    d.resize(n);
    out.dstate.resize(llama_state_seq_get_size(e->dctx, s.id));
    const size_t got = llama_state_seq_get_data(e->dctx, out.dstate.data(), out.dstate.size(), s.id);
    out.dstate.resize(got);
    out.n_draft = got > 0 ? n : 0;
}

}  // namespace

size_t usable(const std::vector<llama_token> &held, const slot &s) {
    size_t n = s.prompt.size();
    size_t keep = std::min(common_prefix(held, s.prompt.data(), n), n - 1);
    for (const auto &m : s.media)
        if (m.start < keep && keep < m.start + m.n_tokens) keep = m.start;
    return keep;
}

bool snapshot(pw_engine *e, const slot &s, ram_entry &out) {
    if (s.cache.size() < kMinSave || s.copying) return false;
    out.tokens = s.cache;
    out.media = s.cached_media;
    out.state.resize(llama_state_seq_get_size(e->ctx, s.id));
    size_t got = out.state.empty() ? 0 : llama_state_seq_get_data(e->ctx, out.state.data(), out.state.size(), s.id);
    out.state.resize(got);
    if (got == 0) return false;
    snapshot_draft(e, s, out);
    return true;
}

void reuse_prefix(pw_engine *e, slot &s) {
    s.reused_kv = s.reused_ram = s.reused_disk = 0;
    s.wait_src = -1;
    s.wait_len = 0;
    const size_t own = usable(s.cache, s);
    if (!e->can_share) {
        truncate(e, s, own);
        start_prompt(e, s);
        return;
    }
    slot *copy_src = nullptr, *wait_src = nullptr, *load_src = nullptr;
    size_t copy_len = 0, wait_len = 0, load_len = 0;
    for (auto &o : e->slots) {
        if (&o == &s || o.state == SLOT_WAIT || o.state == SLOT_FOLLOW) continue;
        if (o.state == SLOT_LOAD) {  // what it will hold once its state is read
            size_t n = std::min(o.load->len, usable(o.prompt, s));
            if (n > load_len) {
                load_len = n;
                load_src = &o;
            }
            continue;
        }
        size_t n = usable(o.cache, s);
        if (n > copy_len) {
            copy_len = n;
            copy_src = &o;
        }
        if (o.state == SLOT_PROMPT) {  // what it will hold once its prompt is in
            size_t w = usable(o.prompt, s);
            if (w > wait_len) {
                wait_len = w;
                wait_src = &o;
            }
        }
    }
    auto ram_it = e->ram.entries.end();
    size_t ram_len = 0;
    if (!s.copying) {  // a restore would write cells that a pending copy reads or overwrites
        for (auto it = e->ram.entries.begin(); it != e->ram.entries.end(); ++it) {
            size_t n = usable(it->tokens, s);
            if (n > ram_len) {
                ram_len = n;
                ram_it = it;
            }
        }
    }
    const disk_hit disk = s.copying ? disk_hit{} : disk_find(e, s);
    const size_t best_now = std::max({own, copy_len, ram_len, disk.len});
    // A sequence reading the state that gives this prefix is waited for and copied: a file is read once.
    if (load_src && load_len >= std::max({own, copy_len, ram_len}) + kMinGain && load_len >= disk.len) {
        wait_src = load_src;
        wait_len = load_len;
    } else {
        load_src = nullptr;
    }
    const bool wait = load_src || (wait_src && wait_len >= best_now + kMinWait);
    const bool copy = !wait && copy_src && copy_len >= own + kMinGain && copy_len >= std::max(ram_len, disk.len);
    const bool from_ram = !wait && !copy && ram_it != e->ram.entries.end() && ram_len >= own + kMinGain &&
                          ram_len >= disk.len;
    // A state still waiting for the writer is at hand; a file is read by the tier's reader thread while the
    // other sequences go on (SLOT_LOAD). Its read starts before the sequence's own state is saved: that
    // could push the file off the disk, but not while it is being read.
    const bool from_disk = !wait && !copy && !from_ram && disk.len >= own + kMinGain;
    std::shared_ptr<const ram_entry> disk_state;
    if (from_disk && disk.pending) disk_state = disk_pending(e, disk);
    else if (from_disk) s.load = disk_load_start(e, disk);
    const size_t lost = wait || copy || from_ram || from_disk ? s.cache.size()
                                                              : s.cache.size() - std::min(own, s.cache.size());
    save_if_lost(e, s, lost, from_ram ? ram_it : e->ram.entries.end());
    if (s.load) {
        s.state = SLOT_LOAD;
        return;
    }
    if (wait) {
        truncate(e, s, own);
        s.wait_src = wait_src->id;
        s.wait_len = wait_len;
        s.state = SLOT_WAIT;
        e->stats.kv_waits++;
        return;
    }
    if (copy) {
        copy_prefix(e, s, *copy_src, copy_len);
    } else if (from_ram) {
        // The state moves into the sequence, as in llama-server's cache: its cells hold it from now on, and
        // go back to host memory (with what the sequence adds) when another prompt takes them. Kept, it would
        // stay beside that newer state whenever the conversation went on from inside it (a regenerated
        // answer), holding the same prefix twice.
        if (restore(e, s, *ram_it, ram_len)) s.reused_ram = (int64_t)s.cache.size();
        ram_drop(e, ram_it);
    } else if (from_disk) {
        restore_read(e, s, *disk_state, disk.len);
    } else {
        truncate(e, s, own);
    }
    start_prompt(e, s);
}

void follow(pw_engine *e, slot &s, slot &leader) {
    save_if_lost(e, s, s.cache.size() - std::min(usable(s.cache, s), s.cache.size()), e->ram.entries.end());
    s.reused_kv = s.reused_ram = s.reused_disk = 0;
    s.wait_src = leader.id;
    s.wait_len = 0;
    s.state = SLOT_FOLLOW;
}

void resolve_waits(pw_engine *e) {
    for (auto &s : e->slots) {
        if (s.state == SLOT_LOAD) {
            if (!disk_load_done(e, *s.load)) continue;
            std::shared_ptr<disk_load> load = std::move(s.load);
            if (load->state) {
                restore_read(e, s, *load->state, load->len);
                start_prompt(e, s);
            } else {
                reuse_prefix(e, s);  // the file was bad: the prefix from wherever else holds it
            }
        }
    }
    for (auto &s : e->slots) {
        if (s.state == SLOT_FOLLOW) {
            // A leader cancelled or failed before its prompt was in leaves its choices to evaluate it.
            const slot_state ls = e->slots[(size_t)s.wait_src].state;
            if (ls != SLOT_PROMPT && ls != SLOT_WAIT && ls != SLOT_LOAD) reuse_prefix(e, s);
            continue;
        }
        if (s.state != SLOT_WAIT) continue;
        slot &src = e->slots[(size_t)s.wait_src];
        if (!s.cancel && (src.state == SLOT_LOAD || (src.state == SLOT_PROMPT && src.n_past < s.wait_len))) continue;
        size_t len = src.state == SLOT_WAIT || src.state == SLOT_LOAD ? 0 : usable(src.cache, s);
        if (src.state == SLOT_IDLE && len < s.wait_len && !s.cancel) {  // it ended short of the prefix
            reuse_prefix(e, s);
            continue;
        }
        if (len >= s.cache.size() + kMinGain) copy_prefix(e, s, src, len);
        start_prompt(e, s);
    }
}

void take_leaders(pw_engine *e) {
    for (auto &s : e->slots) {
        if (s.state != SLOT_FOLLOW) continue;
        slot &leader = e->slots[(size_t)s.wait_src];
        if (leader.state != SLOT_PROMPT || leader.i_batch < 0) continue;  // its last prompt token is not in yet
        copy_prefix(e, s, leader, leader.cache.size());
        start_prompt(e, s);
        s.i_batch = leader.i_batch;
    }
}

void ram_clear(pw_engine *e) {
    e->ram.entries.clear();
    e->ram.bytes = 0;
}

}  // namespace shim
