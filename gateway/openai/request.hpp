#pragma once
// Reading and rewriting client request bodies. The body goes upstream as received, except the
// fields Sluice must change (model name, an explicit `stream`).
#include <rapidjson/document.h>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "openai/errors.hpp"

namespace sluice::openai {

enum class Endpoint { chat_completions, completions, embeddings };
std::string_view to_string(Endpoint e);  // "chat/completions" (also the upstream path suffix)
std::optional<Endpoint> endpoint_for_path(
    std::string_view path);  // "/v1/chat/completions" → chat_completions

/// What Sluice needs to know about a client request.
struct ClientRequest {
  Endpoint endpoint = Endpoint::chat_completions;
  std::string model;
  bool stream = false;           // the client asked for a stream
  bool stream_explicit = false;  // `stream` was present in the body
  bool include_usage = false;    // stream_options.include_usage was true
  // The parsed body, for rewriting; it lives as long as the request (a stream's minutes). Its pool holds a
  // copy of the body, parsed in place (the document's strings point into it), and the document's values, in
  // chunks sized to the body (RapidJSON's default first chunk is 64 KiB, which 2,000 concurrent streams
  // turned into 125 MiB). Held by pointer so the document's view of it survives a move.
  std::unique_ptr<rapidjson::MemoryPoolAllocator<>> pool;
  rapidjson::Document doc;

  /// The top-level members the gateway reads, found while the body is parsed (inspect_request), so reading one
  /// is no search of the document: the member's value, or nullptr when the body has none.
  enum class Top : unsigned char {
    model, messages, prompt, input, tools, stream, stream_options, max_tokens, max_completion_tokens, n, count
  };
  const rapidjson::Value* top(Top t) const {
    const auto i = top_[static_cast<std::size_t>(t)];
    return i == kAbsent ? nullptr : &doc.MemberBegin()[i].value;
  }
  static constexpr std::uint32_t kAbsent = ~std::uint32_t{0};
  std::array<std::uint32_t, static_cast<std::size_t>(Top::count)> top_ = [] {
    std::array<std::uint32_t, static_cast<std::size_t>(Top::count)> a;
    a.fill(kAbsent);
    return a;
  }();

  static constexpr std::size_t kDocumentChunk = 1024;
  ClientRequest() : ClientRequest(kDocumentChunk) {}
  /// `chunk`: the pool's chunk size (inspect_request sizes it to the body). The pool's chunks and the parse's
  /// stack come from one shared malloc-backed allocator (stateless), where RapidJSON would allocate one of its
  /// own for each (two allocations a request). 1024: RapidJSON's own first stack size.
  explicit ClientRequest(std::size_t chunk)
      : pool(std::make_unique<rapidjson::MemoryPoolAllocator<>>(chunk, &malloc_allocator())),
        doc(pool.get(), 1024, &malloc_allocator()) {}
  static rapidjson::CrtAllocator& malloc_allocator() {
    static rapidjson::CrtAllocator shared;
    return shared;
  }
};

/// Deepest nesting of arrays/objects a body may have. JSON libraries recurse per level, so an
/// unbounded depth would let one request exhaust a worker's stack.
inline constexpr int kMaxJsonDepth = 128;

/// True when `json` nests arrays/objects no deeper than `max_depth` (strings are skipped correctly).
bool json_depth_within(std::string_view json, int max_depth = kMaxJsonDepth);

/// Parses and validates a body: a JSON object with a string `model` and the fields the endpoint requires.
std::variant<ClientRequest, ApiError> inspect_request(Endpoint endpoint, std::string_view body);

/// A rough prompt size for admission: a quarter of the characters of every string in the prompt
/// (messages, prompt, input, tools), plus a few tokens per message. Settled against the backend's usage.
std::uint64_t estimate_prompt_tokens(const ClientRequest& req);

/// The most tokens the request may generate in all: max_completion_tokens or max_tokens (clamped by `cap`
/// when non-zero, as the rewrite clamps them), times `n`; nullopt when it sets neither and there is no cap.
std::optional<std::uint64_t> completion_limit(const ClientRequest& req, std::uint64_t cap);

/// What one upstream attempt changes in the client's body.
struct Rewrite {
  std::string_view upstream_model;
  bool include_usage = false;  // streams: ask for stream_options.include_usage (exact token counts)
  /// Fields to add when the client did not send them (values: numbers, true/false, else strings).
  const std::vector<std::pair<std::string, std::string>>* defaults = nullptr;
  std::uint64_t max_tokens_cap = 0;  // clamps max_tokens / max_completion_tokens (0: none)
};

/// Returns the body to send upstream: `original` when nothing must change, else the rewritten JSON.
/// `stream` is always present (Qubrid streams by default). `req.doc` is left as the client sent it.
std::string rewrite_request(const ClientRequest& req, std::string_view original, const Rewrite& rw);

/// Shorthand: only the model name (and an explicit `stream`).
std::string rewrite_request(const ClientRequest& req, std::string_view original,
                            std::string_view upstream_model);

}  // namespace sluice::openai
