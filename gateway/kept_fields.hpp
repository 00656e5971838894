#pragma once
// The few header fields of an HTTP head that Sluice reads, kept as its parsers meet them: the first of each
// (as Beast's field lookup gives), their values back to back in one string, so a head costs one allocation
// however many fields it has. Other strings of the head (a request's method and target) can live there too.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sluice {

/// `Field`: an enum of the kept fields, ending with `count`.
template <class Field>
class KeptFields {
 public:
  /// Where a string kept here lies.
  struct Span {
    std::uint32_t at = 0;
    std::uint32_t size = 0;
  };

  void reserve(std::size_t n) { text_.reserve(n); }
  /// Keeps `s`; view() gives it back.
  Span append(std::string_view s) {
    const Span span{static_cast<std::uint32_t>(text_.size()), static_cast<std::uint32_t>(s.size())};
    text_.append(s);
    return span;
  }
  std::string_view view(Span s) const { return std::string_view(text_).substr(s.at, s.size); }

  /// Keeps `value` as field `f`'s unless an earlier one was kept.
  void keep_first(Field f, std::string_view value) {
    auto& slot = fields_[static_cast<std::size_t>(f)];
    if (slot.seen) return;
    slot = {append(value), true};
  }
  /// The first such field's value, or "" when there was none.
  std::string_view operator[](Field f) const { return view(fields_[static_cast<std::size_t>(f)].span); }

 private:
  struct Slot {
    Span span;
    bool seen = false;
  };
  std::string text_;
  std::array<Slot, static_cast<std::size_t>(Field::count)> fields_{};
};

}  // namespace sluice
