// Errors, logging, backends and devices: what every other part of the shim and Python start from.

#include "shim.h"

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>

namespace {

thread_local std::string g_error;
thread_local std::string g_last_log_error;
thread_local std::string g_first_log_error;  // since the last clear_log_errors()

std::mutex g_log_mutex;
pw_log_fn g_log_fn = nullptr;
void *g_log_data = nullptr;
int32_t g_log_min = GGML_LOG_LEVEL_WARN;

void log_trampoline(enum ggml_log_level level, const char *text, void *) {
    if (level == GGML_LOG_LEVEL_ERROR && text) {
        // llama.cpp reports most failures only through the log: keep the
        // latest error line of this thread for pw_last_error().
        std::string line(text);
        while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.pop_back();
        if (!line.empty()) {
            g_last_log_error = line;
            if (g_first_log_error.empty()) g_first_log_error = line;
        }
    }
    pw_log_fn fn;
    void *data;
    int32_t min_level;
    {
        std::lock_guard<std::mutex> lock(g_log_mutex);
        fn = g_log_fn;
        data = g_log_data;
        min_level = g_log_min;
    }
    if (fn && (int32_t)level >= min_level && level != GGML_LOG_LEVEL_CONT) fn((int)level, text, data);
}

}  // namespace

namespace shim {

int32_t fail(int32_t code, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    g_error = buf;
    return code;
}

std::string llama_reason() {
    std::string r = g_last_log_error;
    g_last_log_error.clear();
    return r.empty() ? std::string("see the log for details") : r;
}

void clear_log_errors() {
    g_last_log_error.clear();
    g_first_log_error.clear();
}

std::string first_reason() {
    std::string r = g_first_log_error.empty() ? g_last_log_error : g_first_log_error;
    clear_log_errors();
    return r.empty() ? std::string("see the log for details") : r;
}

}  // namespace shim

using shim::fail;

extern "C" {

int32_t pw_abi_version(void) { return PW_ABI_VERSION; }
const char *pw_llama_commit(void) { return POWER_LLAMA_COMMIT; }
const char *pw_system_info(void) { return llama_print_system_info(); }
const char *pw_last_error(void) { return g_error.c_str(); }

void pw_set_log(pw_log_fn fn, void *user_data, int32_t min_level) {
    std::lock_guard<std::mutex> lock(g_log_mutex);
    g_log_fn = fn;
    g_log_data = user_data;
    g_log_min = min_level;
}

void pw_init(const char *backend_dir) {
    static std::once_flag once;
    std::string dir = backend_dir ? backend_dir : "";
    std::call_once(once, [&dir] {
        llama_log_set(log_trampoline, nullptr);
        mtmd_helper_log_set(log_trampoline, nullptr);
        if (!dir.empty()) ggml_backend_load_all_from_path(dir.c_str());
        llama_backend_init();
    });
}

int32_t pw_device_count(void) { return (int32_t)ggml_backend_dev_count(); }

int32_t pw_device_get(int32_t index, pw_device *out) {
    if (!out || index < 0 || (size_t)index >= ggml_backend_dev_count()) return fail(PW_E_INVALID, "no device %d", index);
    ggml_backend_dev_t dev = ggml_backend_dev_get((size_t)index);
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", ggml_backend_dev_name(dev));
    snprintf(out->description, sizeof out->description, "%s", ggml_backend_dev_description(dev));
    switch (ggml_backend_dev_type(dev)) {
        case GGML_BACKEND_DEVICE_TYPE_CPU: out->type = 0; break;
        case GGML_BACKEND_DEVICE_TYPE_GPU: out->type = 1; break;
        case GGML_BACKEND_DEVICE_TYPE_IGPU: out->type = 2; break;
        default: out->type = 3; break;
    }
    size_t free_b = 0, total_b = 0;
    ggml_backend_dev_memory(dev, &free_b, &total_b);
    out->memory_free = free_b;
    out->memory_total = total_b;
    return PW_OK;
}

bool pw_supports_gpu_offload(void) { return llama_supports_gpu_offload(); }

}  // extern "C"
