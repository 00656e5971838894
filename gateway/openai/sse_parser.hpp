#pragma once
// Incremental Server-Sent Events parser (WHATWG HTML §9.2.6): LF, CRLF or lone-CR line ends,
// ':' comments, multi-line data, and bytes split anywhere across reads.
//
// The relay's form, feed(bytes, std::vector<SseEventView>&), copies nothing in the common case: an event whose
// one data line lies whole in the bytes fed is a view into those bytes. Only an event that spans two feeds or
// has several data lines is assembled in storage of the parser's own, reused from feed to feed, so a long
// stream allocates nothing per event once warm.
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::openai {

/// One dispatched event, as views valid until the next feed() (into the bytes fed, or the parser's storage).
struct SseEventView {
  std::string_view event;  // empty means the default type "message"
  std::string_view data;   // its lines joined by '\n', no trailing newline
  std::string_view id;     // this event's own `id` field (a relay has no use for the carried-over last event ID)
  std::uint64_t begin = 0;  // its bytes in the stream: [begin, end), counted from the first byte fed
  std::uint64_t end = 0;
};

/// The same event, owning its text (for callers that keep events past the next feed).
struct SseEvent {
  std::string event;
  std::string data;
  std::string id;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
};

/// Parses an SSE byte stream fed in arbitrary pieces, and tracks the offset up to which the bytes
/// form whole events (or stand-alone comments), so a relay can forward exactly those bytes unchanged.
class SseParser {
 public:
  /// Parses `bytes` and appends every event they complete to `out` (views valid until the next feed).
  void feed(std::string_view bytes, std::vector<SseEventView>& out);
  /// The same, copying each event.
  void feed(std::string_view bytes, std::vector<SseEvent>& out);

  /// Bytes fed so far.
  std::uint64_t total() const { return total_; }
  /// Offset (counted from the first byte ever fed) just past the last complete event or stand-alone comment.
  std::uint64_t boundary() const { return boundary_; }
  /// Bytes held in a line that has not ended yet.
  std::size_t partial_line_bytes() const { return line_.size(); }

 private:
  // `stable`: `line` lies in the bytes of the current feed (else in line_, which is about to be cleared).
  void process_line(std::string_view line, bool stable, std::vector<SseEventView>& out);
  std::string_view keep(std::string_view text);  // a copy in this feed's storage

  std::string line_;  // the line being assembled across feeds
  // The event being assembled: its data is a view while it is one line of the current feed, else in data_buf_.
  std::string_view data_view_;
  std::string data_buf_;
  bool data_in_buf_ = false;
  std::string event_, id_;
  bool has_data_ = false;  // at least one data line
  bool in_event_ = false;  // a field line has been seen since the last dispatch
  bool skip_lf_ = false;   // the previous byte was a CR: a following LF belongs to it
  bool at_start_ = true;   // a UTF-8 BOM may still be skipped
  std::uint64_t total_ = 0;
  std::uint64_t boundary_ = 0;
  std::deque<std::string> kept_;  // storage for this feed's assembled events (capacity kept between feeds)
  std::size_t kept_used_ = 0;
  std::vector<SseEventView> scratch_;  // for the copying feed()
};

}  // namespace sluice::openai
