// ggml's RPC backend: remote devices a model's layers may go to, and the RPC server that offers ours.
//
// Both ends are reached through the RPC registry's proc addresses, as llama.cpp's own tools do, so the
// same code works when the backend is linked in (native builds) and when it is a loaded module (wheels).

#include "shim.h"

#include "ggml-backend-impl.h"  // struct ggml_backend_device / ggml_backend: the capped device below

#include <algorithm>
#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <vector>

using shim::clear_log_errors;
using shim::fail;
using shim::llama_reason;

namespace {

typedef ggml_backend_reg_t (*add_server_fn)(const char *endpoint);
typedef void (*start_server_fn)(const char *endpoint, const char *cache_dir, size_t n_threads, size_t n_devices,
                                ggml_backend_dev_t *devices);

void *rpc_proc(const char *name) {
    ggml_backend_reg_t reg = ggml_backend_reg_by_name("RPC");
    return reg ? ggml_backend_reg_get_proc_address(reg, name) : nullptr;
}

// `rpc-server --mem`: a copy of a local device that reports at most g_cap bytes of memory to clients (which
// split layers by it) and stamps itself on the backends it creates, since the server asks a backend's device.
size_t g_cap = 0;
std::vector<ggml_backend_dev_t> g_inner;  // the wrapped device of each capped one, by position
std::vector<ggml_backend_device *> g_capped;

ggml_backend_dev_t inner_of(ggml_backend_dev_t dev) {
    for (size_t i = 0; i < g_capped.size(); i++)
        if (g_capped[i] == dev) return g_inner[i];
    return dev;
}

void capped_memory(ggml_backend_dev_t dev, size_t *free_b, size_t *total_b) {
    ggml_backend_dev_t inner = inner_of(dev);
    inner->iface.get_memory(inner, free_b, total_b);
    *total_b = std::min(*total_b, g_cap);
    *free_b = std::min(*free_b, g_cap);
}

void capped_props(ggml_backend_dev_t dev, struct ggml_backend_dev_props *props) {
    ggml_backend_dev_t inner = inner_of(dev);
    inner->iface.get_props(inner, props);
    capped_memory(dev, &props->memory_free, &props->memory_total);
}

ggml_backend_t capped_init(ggml_backend_dev_t dev, const char *params) {
    ggml_backend_dev_t inner = inner_of(dev);
    ggml_backend_t backend = inner->iface.init_backend(inner, params);
    if (backend) backend->device = dev;
    return backend;
}

ggml_backend_dev_t capped(ggml_backend_dev_t inner) {
    auto *dev = new ggml_backend_device(*inner);
    dev->iface.get_memory = capped_memory;
    dev->iface.get_props = capped_props;
    dev->iface.init_backend = capped_init;
    g_inner.push_back(inner);
    g_capped.push_back(dev);
    return dev;
}

}  // namespace

extern "C" {

bool pw_supports_rpc(void) { return rpc_proc("ggml_backend_rpc_add_server") != nullptr; }

int32_t pw_rpc_add_server(const char *endpoint) {
    static std::mutex mutex;
    static std::set<std::string> added;
    if (!endpoint || !strchr(endpoint, ':')) return fail(PW_E_INVALID, "an RPC server is host:port");
    auto add = (add_server_fn)rpc_proc("ggml_backend_rpc_add_server");
    if (!add) return fail(PW_E_INVALID, "this build has no RPC backend (build with POWER_RPC=ON)");
    std::lock_guard<std::mutex> lock(mutex);
    clear_log_errors();
    ggml_backend_reg_t reg = add(endpoint);
    if (!reg) return fail(PW_E_LOAD, "RPC server %s offers no device: %s", endpoint, llama_reason().c_str());
    // The registry adds each device once; registering it twice would list its devices twice.
    if (added.insert(endpoint).second) ggml_backend_register(reg);
    return (int32_t)ggml_backend_reg_dev_count(reg);
}

int32_t pw_rpc_serve(const char *endpoint, int32_t n_threads, uint64_t mem_bytes, const char *cache_dir) {
    if (!endpoint || !strchr(endpoint, ':')) return fail(PW_E_INVALID, "an RPC endpoint is host:port");
    auto start = (start_server_fn)rpc_proc("ggml_backend_rpc_start_server");
    if (!start) return fail(PW_E_INVALID, "this build has no RPC backend (build with POWER_RPC=ON)");
    // As llama.cpp's rpc-server: the accelerators, or the CPU where there is none.
    std::vector<ggml_backend_dev_t> devices;
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        enum ggml_backend_dev_type t = ggml_backend_dev_type(dev);
        if (t != GGML_BACKEND_DEVICE_TYPE_CPU && t != GGML_BACKEND_DEVICE_TYPE_ACCEL &&
            strcmp(ggml_backend_reg_name(ggml_backend_dev_backend_reg(dev)), "RPC") != 0)
            devices.push_back(dev);
    }
    if (devices.empty()) {
        ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
        if (cpu) devices.push_back(cpu);
    }
    if (devices.empty()) return fail(PW_E_INTERNAL, "no device to serve");
    if (mem_bytes > 0) {
        g_cap = (size_t)mem_bytes;
        for (auto &dev : devices) dev = capped(dev);
    }
    // Returns only when it cannot listen (or accept): the reason is on stderr.
    start(endpoint, cache_dir && *cache_dir ? cache_dir : nullptr, (size_t)std::max(1, n_threads), devices.size(),
          devices.data());
    return fail(PW_E_INTERNAL, "the RPC server on %s stopped (is the port in use?)", endpoint);
}

}  // extern "C"
