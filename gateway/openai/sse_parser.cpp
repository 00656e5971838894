#include "openai/sse_parser.hpp"

#include <cstring>

namespace sluice::openai {

void SseParser::feed(std::string_view bytes, std::vector<SseEvent>& out) {
  std::size_t i = 0;
  const std::size_t n = bytes.size();
  while (i < n) {
    if (skip_lf_) {
      skip_lf_ = false;
      if (bytes[i] == '\n') {
        ++i;
        ++total_;
        // The LF completes a CRLF whose CR already ended the line: keep the boundary on the whole terminator.
        if (boundary_ + 1 == total_) boundary_ = total_;
        continue;
      }
    }
    if (at_start_) {
      // One leading BOM is ignored; it may itself arrive split.
      static constexpr std::string_view bom = "\xEF\xBB\xBF";
      std::size_t k = 0;
      while (k < bom.size() && line_.size() + k < bom.size() && i + k < n &&
             bytes[i + k] == bom[line_.size() + k])
        ++k;
      if (line_.size() + k == bom.size()) {
        line_.clear();
        at_start_ = false;
        i += k;
        total_ += k;
        continue;
      }
      if (i + k == n && k > 0) {  // a BOM prefix so far: keep it pending
        line_.append(bytes.substr(i, k));
        total_ += k;
        return;
      }
      at_start_ = false;
    }
    // Find the end of the current line.
    const char* start = bytes.data() + i;
    std::size_t rest = n - i;
    std::size_t j = 0;
    while (j < rest && start[j] != '\n' && start[j] != '\r') ++j;
    if (j == rest) {
      line_.append(start, rest);
      total_ += rest;
      return;
    }
    total_ += j + 1;
    if (start[j] == '\r') skip_lf_ = true;
    if (line_.empty()) {
      process_line(std::string_view(start, j), out);
    } else {
      line_.append(start, j);
      process_line(line_, out);
      line_.clear();
    }
    i += j + 1;
  }
}

void SseParser::process_line(std::string_view line, std::vector<SseEvent>& out) {
  if (line.empty()) {  // blank line: dispatch
    if (has_data_) {
      if (!pending_.data.empty() && pending_.data.back() == '\n') pending_.data.pop_back();
      pending_.begin = boundary_;
      pending_.end = total_;
      out.push_back(std::move(pending_));
    }
    pending_ = SseEvent{};
    has_data_ = false;
    in_event_ = false;
    boundary_ = total_;
    return;
  }
  if (line.front() == ':') {  // comment (keep-alive)
    if (!in_event_) boundary_ = total_;
    return;
  }
  in_event_ = true;
  std::string_view field = line, value;
  if (auto colon = line.find(':'); colon != std::string_view::npos) {
    field = line.substr(0, colon);
    value = line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  if (field == "data") {
    pending_.data.append(value);
    pending_.data.push_back('\n');
    has_data_ = true;
  } else if (field == "event") {
    pending_.event.assign(value);
  } else if (field == "id") {
    if (value.find('\0') == std::string_view::npos) pending_.id.assign(value);
  }
  // "retry" and unknown fields do not matter to a relay.
}

}  // namespace sluice::openai
