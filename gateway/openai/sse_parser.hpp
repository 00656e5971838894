#pragma once
// Incremental Server-Sent Events parser (WHATWG HTML §9.2.6): LF, CRLF or lone-CR line ends,
// ':' comments, multi-line data, and bytes split anywhere across reads.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::openai {

/// One dispatched event. `data` has its lines joined by '\n' and no trailing newline.
struct SseEvent {
  std::string event;  // empty means the default type "message"
  std::string data;
  std::string id;  // this event's own `id` field (a relay has no use for the carried-over last event ID)
  std::uint64_t begin = 0;  // its bytes in the stream: [begin, end), counted from the first byte fed
  std::uint64_t end = 0;
};

/// Parses an SSE byte stream fed in arbitrary pieces, and tracks the offset up to which the bytes
/// form whole events (or stand-alone comments), so a relay can forward exactly those bytes unchanged.
class SseParser {
 public:
  /// Parses `bytes` and appends every event they complete to `out`.
  void feed(std::string_view bytes, std::vector<SseEvent>& out);

  /// Bytes fed so far.
  std::uint64_t total() const { return total_; }
  /// Offset (counted from the first byte ever fed) just past the last complete event or stand-alone comment.
  std::uint64_t boundary() const { return boundary_; }
  /// Bytes held in a line that has not ended yet.
  std::size_t partial_line_bytes() const { return line_.size(); }

 private:
  void process_line(std::string_view line, std::vector<SseEvent>& out);

  std::string line_;       // the line being assembled across feeds
  SseEvent pending_;       // fields of the event being assembled
  bool has_data_ = false;  // pending_ has at least one data line
  bool in_event_ = false;  // a field line has been seen since the last dispatch
  bool skip_lf_ = false;   // the previous byte was a CR: a following LF belongs to it
  bool at_start_ = true;   // a UTF-8 BOM may still be skipped
  std::uint64_t total_ = 0;
  std::uint64_t boundary_ = 0;
};

}  // namespace sluice::openai
