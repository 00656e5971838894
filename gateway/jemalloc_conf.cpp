// jemalloc's options for the sluice binary (linked only when the binary is linked with jemalloc).
//
// A worker serves its connections in bursts: one wake-up of the event loop finds tens of requests ready, and
// each holds a coroutine frame, a document and buffers of the same few sizes until its answer is written. At
// jemalloc's default of at least 20 cached blocks per size class and thread, such a burst empties a class's
// cache, refills it from the arena (under the arena's lock), overfills it when the answers go, and flushes
// back: three of a request's 17 allocations went through the arena at 64 keep-alive connections. Caching at
// least 128 blocks per class absorbs a burst of 64 requests (0.13 arena allocations per request). What a
// cache holds and does not use is returned by jemalloc's incremental cache GC as before.
//
// jemalloc reads this string when it starts; MALLOC_CONF in the environment is read after it, so an operator's
// setting wins.
extern "C" {
// NOLINTNEXTLINE(cppcoreguidelines-avoid-non-const-global-variables): the name and type jemalloc looks for
const char* malloc_conf = "tcache_nslots_small_min:128";
}
