#pragma once
// The pieces of HTTP/1.1 head grammar Sluice's one-pass head readers share (a client's request, a backend's
// answer): what a token is, optional white space, a Connection field's tokens, a field name compared without
// regard to case. Each reader reads only the plain form every HTTP implementation sends and hands anything
// else to Beast's parser, so these need to be exact only where they say yes.
#include <array>
#include <bit>
#include <boost/beast/core/string.hpp>
#include <cstdint>
#include <cstring>
#include <string_view>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace sluice::head {

/// Where the first CR LF CR LF in `in` begins (the end of a head), or npos: `in.find("\r\n\r\n")`, but by
/// looking for line feeds sixteen bytes at a time (SSE2) and checking the three bytes before each, where
/// string_view::find stops at every CR of every line and compares from there.
inline std::size_t find_head_end(std::string_view in) {
  const char* const b = in.data();
  const std::size_t n = in.size();
  auto ends_blank_line = [b](std::size_t k) { return k >= 3 && b[k - 1] == '\r' && b[k - 2] == '\n' && b[k - 3] == '\r'; };
  std::size_t j = 0;
#if defined(__SSE2__)
  const __m128i lf = _mm_set1_epi8('\n');
  for (; j + 16 <= n; j += 16) {
    auto mask = static_cast<unsigned>(
        _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + j)), lf)));
    for (; mask != 0; mask &= mask - 1) {
      const std::size_t k = j + static_cast<std::size_t>(std::countr_zero(mask));
      if (ends_blank_line(k)) return k - 3;
    }
  }
#endif
  for (; j < n; ++j)
    if (b[j] == '\n' && ends_blank_line(j)) return j - 3;
  return std::string_view::npos;
}

// RFC 9110 tchar: the characters of a method, a field name and a Connection token.
inline constexpr std::array<bool, 256> kTchar = [] {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
  return t;
}();

inline bool is_tchar(char c) { return kTchar[static_cast<unsigned char>(c)]; }
inline bool is_ows(char c) { return c == ' ' || c == '\t'; }

/// A Connection field's tokens, as flags; false when its list is not a plain one (an empty element, a character
/// outside a token) or names `upgrade`: Beast's parser reads those.
inline bool connection_tokens(std::string_view v, bool& close, bool& keep_alive) {
  std::size_t i = 0;
  for (;;) {
    while (i < v.size() && is_ows(v[i])) ++i;
    const std::size_t start = i;
    while (i < v.size() && is_tchar(v[i])) ++i;
    const std::string_view token = v.substr(start, i - start);
    if (token.empty()) return false;
    if (boost::beast::iequals(token, "close"))
      close = true;
    else if (boost::beast::iequals(token, "keep-alive"))
      keep_alive = true;
    else if (boost::beast::iequals(token, "upgrade"))
      return false;
    while (i < v.size() && is_ows(v[i])) ++i;
    if (i == v.size()) return true;
    if (v[i] != ',') return false;
    ++i;
  }
}

/// `name`, a token (tchar only), is `lower` (a lowercase name of letters, digits and '-') in any ASCII case.
/// Eight bytes at a time: setting bit 0x20 lowercases a letter and leaves a digit or '-' as it is, and turns no
/// other tchar into one of those.
inline bool is_name(std::string_view name, std::string_view lower) {
  if (name.size() != lower.size()) return false;
  constexpr std::uint64_t kCase = 0x2020202020202020ull;
  std::size_t i = 0;
  for (; i + 8 <= name.size(); i += 8) {
    std::uint64_t a, b;
    std::memcpy(&a, name.data() + i, 8);
    std::memcpy(&b, lower.data() + i, 8);
    if ((a | kCase) != b) return false;
  }
  for (; i < name.size(); ++i)
    if ((name[i] | 0x20) != lower[i]) return false;
  return true;
}

/// The first byte at or after `p` (before `end`) that may not stand in a plain field value: anything but visible
/// ASCII, space and tab. Sixteen bytes at a time (SSE2) while they lie before `end`.
inline const char* value_end(const char* p, const char* end) {
#if defined(__SSE2__)
  const __m128i below = _mm_set1_epi8(0x1f), above = _mm_set1_epi8(0x7f), tab = _mm_set1_epi8('\t');
  for (; end - p >= 16; p += 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    // Signed compares: bytes from 0x80 up are negative, so "above 0x1f and below 0x7f" is exactly visible ASCII.
    const __m128i ok = _mm_or_si128(_mm_and_si128(_mm_cmpgt_epi8(v, below), _mm_cmplt_epi8(v, above)),
                                    _mm_cmpeq_epi8(v, tab));
    if (const auto bad = static_cast<unsigned>(~_mm_movemask_epi8(ok)) & 0xffffu)
      return p + std::countr_zero(bad);
  }
#endif
  while (p < end && ((*p >= ' ' && *p < 0x7f) || *p == '\t')) ++p;
  return p;
}

/// One field line from `p` (at its name) up to the end of the head, `end` (just past its blank line): name ":"
/// OWS value OWS CRLF, in the plain form (a token name, visible ASCII, spaces and tabs in the value). Moves `p`
/// past the line and gives the name and the value without its OWS; false for anything else (a folded line, a
/// control byte, a byte past ASCII, a bare LF), which Beast's parser then reads. The head ends in CR LF CR LF,
/// so every scan stops there at the latest.
inline bool plain_field(const char*& p, const char* end, std::string_view& name, std::string_view& value) {
  const char* n = p;
  while (is_tchar(*p)) ++p;  // stops at the line's CR at the latest
  if (p == n || *p != ':') return false;  // (a line folded onto this one starts with a space: no name)
  name = std::string_view(n, static_cast<std::size_t>(p - n));
  ++p;
  while (is_ows(*p)) ++p;
  const char* v = p;
  p = value_end(p, end);
  if (p[0] != '\r' || p[1] != '\n') return false;
  const char* ve = p;
  while (ve > v && is_ows(ve[-1])) --ve;
  value = std::string_view(v, static_cast<std::size_t>(ve - v));
  p += 2;
  return true;
}

/// A Content-Length value in the plain form: up to 18 decimal digits (no list, no sign, no space).
inline bool plain_length(std::string_view value, std::uint64_t& length) {
  if (value.empty() || value.size() > 18) return false;
  std::uint64_t n = 0;
  for (char c : value) {
    if (c < '0' || c > '9') return false;
    n = n * 10 + static_cast<unsigned>(c - '0');
  }
  length = n;
  return true;
}

/// What a one-pass reader does with a field: the names Beast's parser acts on (Content-Length, Connection,
/// Transfer-Encoding where the reader frames chunks itself, and those it leaves to Beast), the kept ones, and
/// the rest.
enum class Plain : unsigned char { other, content_length, connection, transfer_encoding, to_beast, kept };
template <class Field>
struct Named {
  Plain what;
  Field field = Field::count;
};

/// The fields of a plain head, as read_fields found them: the kept ones (the first `N`; more go to Beast), the
/// framing, and the Connection tokens.
template <class Field, std::size_t N>
struct PlainFields {
  struct Kept {
    Field f;
    std::string_view value;
  };
  std::array<Kept, N> kept;
  std::size_t n_kept = 0;
  bool has_length = false, chunked = false, close = false, keep_alive = false;
  std::uint64_t length = 0;
};

/// Reads the field lines from `p` up to `last` (just past the last field line's CRLF) of a head that ends at
/// `end`, each named by `classify` (a Named<Field> for a name); false for a head not in the plain form (a field
/// line plain_field refuses, a second Content-Length or one not plain, Transfer-Encoding other than exactly
/// `chunked` or twice, a Connection list not plain or naming `upgrade`, a name `classify` leaves to Beast, more
/// kept fields than `N`), which Beast's parser then reads.
template <class Field, std::size_t N, class Classify>
bool read_fields(const char* p, const char* last, const char* end, Classify classify, PlainFields<Field, N>& out) {
  while (p < last) {
    std::string_view name, value;
    if (!plain_field(p, end, name, value)) return false;
    const Named<Field> named = classify(name);
    switch (named.what) {
      case Plain::content_length:
        if (out.has_length || !plain_length(value, out.length)) return false;
        out.has_length = true;
        break;
      case Plain::transfer_encoding:
        if (out.chunked || !boost::beast::iequals(value, "chunked")) return false;
        out.chunked = true;
        break;
      case Plain::connection:
        if (!connection_tokens(value, out.close, out.keep_alive)) return false;
        break;
      case Plain::to_beast:
        return false;
      case Plain::kept:
        if (out.n_kept == N) return false;
        out.kept[out.n_kept++] = {named.field, value};
        break;
      case Plain::other:
        break;
    }
  }
  return true;
}

}  // namespace sluice::head
