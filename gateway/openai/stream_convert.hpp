#pragma once
// Converting between a streamed answer and a whole one, for backends that answer in the other form
// than the client asked for (Qubrid's legacy endpoint may stream even when asked not to).
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "openai/request.hpp"

namespace sluice::openai {

/// Joins a chat (or completions) stream's `data:` payloads, fed one by one as they arrive, into one
/// `chat.completion` (or `text_completion`): content, reasoning, tool-call fragments by index, finish
/// reason, usage. Only the joined text is kept, not the chunks.
class StreamJoiner {
 public:
  explicit StreamJoiner(Endpoint endpoint);
  ~StreamJoiner();
  StreamJoiner(StreamJoiner&&) noexcept;
  StreamJoiner& operator=(StreamJoiner&&) noexcept;

  /// One event's payload ([DONE], non-JSON payloads and ones nested deeper than kMaxJsonDepth are skipped).
  void add(std::string_view data);
  /// The completion so far; nullopt when no payload was a JSON chunk.
  std::optional<std::string> result() const;

 private:
  struct State;
  bool chat_;
  std::unique_ptr<State> s_;
};

/// Joins the `data:` payloads of a chat (or completions) stream into one `chat.completion`
/// (or `text_completion`): content, reasoning, tool-call fragments by index, finish reason, usage.
/// nullopt when no payload is a JSON chunk.
std::optional<std::string> completion_from_stream(Endpoint endpoint,
                                                  const std::vector<std::string>& payloads);

/// Turns a whole `chat.completion` (or `text_completion`) into the SSE events a stream would have
/// carried: one chunk with the message, one with the finish reason, the usage chunk when
/// `include_usage`, then [DONE]. nullopt when the body is not such a completion (or nests deeper than
/// kMaxJsonDepth).
std::optional<std::string> stream_from_completion(Endpoint endpoint, std::string_view body,
                                                  bool include_usage);

}  // namespace sluice::openai
