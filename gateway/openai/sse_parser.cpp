#include "openai/sse_parser.hpp"

#include <bit>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace sluice::openai {

namespace {

// The offset of the first line end (LF or CR) in [p, p + n), or n: one pass over the line, sixteen bytes at a
// time where SSE2 is there, instead of a search for each of the two bytes.
std::size_t line_end_sse2(const char* p, std::size_t n) {
#if defined(__SSE2__)
  if (n >= 16) {
    const __m128i lf = _mm_set1_epi8('\n'), cr = _mm_set1_epi8('\r');
    for (std::size_t i = 0;; i += 16) {
      // The last step loads the last sixteen bytes, overlapping the one before (those held no line end).
      const std::size_t at = i + 16 <= n ? i : n - 16;
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + at));
      if (const auto mask =
              static_cast<unsigned>(_mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, lf), _mm_cmpeq_epi8(v, cr)))))
        return at + static_cast<std::size_t>(std::countr_zero(mask));
      if (at + 16 >= n) return n;
    }
  }
#endif
  for (std::size_t i = 0; i < n; ++i)
    if (p[i] == '\n' || p[i] == '\r') return i;
  return n;
}

#if defined(__x86_64__)
// The same, thirty-two bytes at a time, for CPUs with AVX2 (chosen at run time: the build targets plain x86-64).
// An SSE event's data line is a JSON chunk of 150-300 bytes, and this is the relay's one pass over all of it.
[[gnu::target("avx2")]] std::size_t line_end_avx2(const char* p, std::size_t n) {
  if (n < 32) return line_end_sse2(p, n);
  const __m256i lf = _mm256_set1_epi8('\n'), cr = _mm256_set1_epi8('\r');
  for (std::size_t i = 0;; i += 32) {  // as line_end_sse2, the last load overlapping
    const std::size_t at = i + 32 <= n ? i : n - 32;
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + at));
    if (const auto mask = static_cast<unsigned>(
            _mm256_movemask_epi8(_mm256_or_si256(_mm256_cmpeq_epi8(v, lf), _mm256_cmpeq_epi8(v, cr)))))
      return at + static_cast<std::size_t>(std::countr_zero(mask));
    if (at + 32 >= n) return n;
  }
}

std::size_t line_end(const char* p, std::size_t n) {
  static const bool avx2 = (__builtin_cpu_init(), __builtin_cpu_supports("avx2"));
  return avx2 ? line_end_avx2(p, n) : line_end_sse2(p, n);
}
#else
std::size_t line_end(const char* p, std::size_t n) { return line_end_sse2(p, n); }
#endif

}  // namespace

std::string_view SseParser::keep(std::string_view text) {
  if (kept_used_ == kept_.size()) kept_.emplace_back();
  auto& slot = kept_[kept_used_++];
  slot.assign(text);
  return slot;
}

void SseParser::feed(std::string_view bytes, std::vector<SseEvent>& out) {
  scratch_.clear();
  feed(bytes, scratch_);
  for (const auto& e : scratch_)
    out.push_back(SseEvent{std::string(e.event), std::string(e.data), std::string(e.id), e.begin, e.end});
}

void SseParser::feed(std::string_view bytes, std::vector<SseEventView>& out) {
  kept_used_ = 0;  // views handed out by the last feed are no longer valid
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
    // Find the end of the current line: the first LF, unless a CR comes before it.
    const char* start = bytes.data() + i;
    const std::size_t rest = n - i;
    const std::size_t j = line_end(start, rest);
    if (!in_event_ && line_.empty() && j + 1 < rest && start[j] == '\n' && start[j + 1] == '\n' && j >= 5 &&
        std::memcmp(start, "data:", 5) == 0) {
      // Nearly every event a relay sees: one data line and the blank line after it, whole in these bytes and
      // with no field before them. Dispatched here as the two lines would be, without processing each.
      std::string_view value(start + 5, j - 5);
      if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      SseEventView e;
      e.data = value;
      e.begin = boundary_;
      total_ += j + 2;
      e.end = total_;
      boundary_ = total_;
      out.push_back(e);
      i += j + 2;
      continue;
    }
    if (j == rest) {
      line_.append(start, rest);
      total_ += rest;
      break;
    }
    total_ += j + 1;
    if (start[j] == '\r') skip_lf_ = true;
    if (line_.empty()) {
      process_line(std::string_view(start, j), true, out);
    } else {
      line_.append(start, j);
      process_line(line_, false, out);
      line_.clear();
    }
    i += j + 1;
  }
  // An event still open holds views into these bytes, which the caller may now move or reuse.
  if (has_data_ && !data_in_buf_) {
    data_buf_.assign(data_view_);
    data_in_buf_ = true;
  }
}

void SseParser::process_line(std::string_view line, bool stable, std::vector<SseEventView>& out) {
  if (line.empty()) {  // blank line: dispatch
    if (has_data_) {
      SseEventView e;
      e.data = data_in_buf_ ? keep(data_buf_) : data_view_;
      if (!event_.empty()) e.event = keep(event_);
      if (!id_.empty()) e.id = keep(id_);
      e.begin = boundary_;
      e.end = total_;
      out.push_back(e);
    }
    data_view_ = {};
    data_buf_.clear();
    data_in_buf_ = false;
    event_.clear();
    id_.clear();
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
  if (line.size() >= 5 && std::memcmp(line.data(), "data:", 5) == 0) {  // nearly every line a relay sees
    field = line.substr(0, 4);
    value = line.substr(5);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  } else if (auto colon = line.find(':'); colon != std::string_view::npos) {
    field = line.substr(0, colon);
    value = line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  if (field == "data") {
    if (!has_data_ && stable) {
      data_view_ = value;  // the common case: one data line, read whole
    } else {
      if (!data_in_buf_) {
        data_buf_.assign(data_view_);
        data_in_buf_ = true;
      }
      if (has_data_) data_buf_.push_back('\n');
      data_buf_.append(value);
    }
    has_data_ = true;
  } else if (field == "event") {
    event_.assign(value);
  } else if (field == "id") {
    if (value.find('\0') == std::string_view::npos) id_.assign(value);
  }
  // "retry" and unknown fields do not matter to a relay.
}

}  // namespace sluice::openai
